//! Where each processor's queues are: the routing table classify and the
//! workflow function share.

use std::collections::HashMap;

use crate::domain::job::{Lane, Modality};
use crate::ports::error::ConfigError;
use crate::runtime::config;

/// The queue of each modality and lane that has a processor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessorQueues(HashMap<(Modality, Lane), String>);

impl ProcessorQueues {
    /// `{MODALITY}_{LANE}_QUEUE_URL` for each modality and lane, falling back
    /// to `{MODALITY}_QUEUE_URL`; a modality without either has no processor yet.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut routes = HashMap::new();
        for m in Modality::ALL {
            let modality = m.as_str().to_uppercase();
            let any_lane = config::optional(&format!("{modality}_QUEUE_URL"));
            for lane in Lane::ALL {
                let own = config::optional(&format!("{modality}_{}_QUEUE_URL", lane.as_str().to_uppercase()));
                if let Some(url) = own.or_else(|| any_lane.clone()) {
                    routes.insert((*m, *lane), url);
                }
            }
        }
        if routes.is_empty() {
            return Err(ConfigError::Missing("TEXT_NORMAL_QUEUE_URL"));
        }
        Ok(Self(routes))
    }

    pub fn get(&self, modality: Modality, lane: Lane) -> Option<&str> {
        self.0.get(&(modality, lane)).map(String::as_str)
    }
}

impl FromIterator<((Modality, Lane), String)> for ProcessorQueues {
    fn from_iter<I: IntoIterator<Item = ((Modality, Lane), String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}
