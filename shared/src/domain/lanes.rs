//! The lanes an operator pauses and resumes: each modality's priority queue
//! with the event-source mapping that feeds its processor from it. Pausing a
//! lane disables that mapping (as `UpdateEventSourceMapping --no-enabled`
//! does), so its messages wait in the queue and its jobs stay `queued`.

use serde::Serialize;

use crate::domain::job::{Job, JobStatus, Lane, Modality};

/// A lane's name: its modality and priority lane, `text-bulk`.
pub fn lane_name(modality: Modality, lane: Lane) -> String {
    format!("{}-{}", <&str>::from(modality), lane.as_str())
}

/// The lane a queued, classified job waits in, when `lanes` has it.
pub fn lane_of<'a>(lanes: &'a [LaneMapping], job: &Job) -> Option<&'a LaneMapping> {
    let (JobStatus::Queued, Some(modality)) = (job.status, job.modality) else { return None };
    let name = lane_name(modality, job.priority.lane());
    lanes.iter().find(|l| l.lane == name)
}

/// A lane (`text-bulk`), the mapping that drains it and its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneMapping {
    pub lane: String,
    /// The event-source mapping's UUID.
    pub mapping_id: String,
    pub queue_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanesError {
    #[error("line {line}: expected `LANE MAPPING_UUID QUEUE_URL`")]
    Malformed { line: usize },
    #[error("lane {0} is listed twice")]
    Duplicate(String),
    #[error("no lane or modality is called {0:?}")]
    Unknown(String),
}

/// Reads the `LANES` setting: one `LANE MAPPING_UUID QUEUE_URL` per line.
pub fn parse(text: &str) -> Result<Vec<LaneMapping>, LanesError> {
    let mut lanes: Vec<LaneMapping> = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [lane, mapping_id, queue_url] = fields[..] else { return Err(LanesError::Malformed { line: index + 1 }) };
        if lanes.iter().any(|l| l.lane == lane) {
            return Err(LanesError::Duplicate(lane.to_owned()));
        }
        lanes.push(LaneMapping { lane: lane.to_owned(), mapping_id: mapping_id.to_owned(), queue_url: queue_url.to_owned() });
    }
    Ok(lanes)
}

/// The lanes `target` names: one lane (`video-bulk`) or a whole modality (`video`).
pub fn select<'a>(lanes: &'a [LaneMapping], target: &str) -> Result<Vec<&'a LaneMapping>, LanesError> {
    let chosen: Vec<&LaneMapping> =
        lanes.iter().filter(|l| l.lane == target || l.lane.split_once('-').is_some_and(|(modality, _)| modality == target)).collect();
    if chosen.is_empty() { Err(LanesError::Unknown(target.to_owned())) } else { Ok(chosen) }
}

/// An event-source mapping's state, as Lambda reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::EnumString, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
pub enum MappingState {
    Enabled,
    Enabling,
    Disabled,
    Disabling,
    /// Creating, updating or deleting: neither paused nor running for sure.
    #[strum(disabled)]
    Changing,
}

impl MappingState {
    /// Lambda's `State` string (`Enabled`, `Disabling`, …).
    pub fn from_lambda(state: &str) -> Self {
        state.parse().unwrap_or(Self::Changing)
    }

    /// Whether the lane is, or is becoming, paused.
    pub fn paused(self) -> bool {
        matches!(self, Self::Disabled | Self::Disabling)
    }
}

/// Messages in a lane's queue: waiting, and received but not yet deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub waiting: u64,
    pub in_flight: u64,
}

/// What the operator view shows of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneStatus {
    pub lane: String,
    /// The lane's queue: where an operator looks further (its oldest
    /// message's age is CloudWatch's `ApproximateAgeOfOldestMessage`).
    pub queue_url: String,
    pub state: MappingState,
    pub paused: bool,
    #[serde(flatten)]
    pub depth: QueueDepth,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LANES: &str = "
        text-fast 1111 http://q/text-fast
        text-bulk 2222 http://q/text-bulk
        video-bulk 3333 http://q/video-bulk
    ";

    #[test]
    fn a_target_names_one_lane_or_every_lane_of_a_modality() {
        let lanes = parse(LANES).expect("lanes");
        let names = |target| select(&lanes, target).map(|ls| ls.iter().map(|l| l.lane.clone()).collect::<Vec<_>>());
        assert_eq!(names("text-bulk"), Ok(vec!["text-bulk".to_owned()]));
        assert_eq!(names("text"), Ok(vec!["text-fast".to_owned(), "text-bulk".to_owned()]));
        assert_eq!(names("tex"), Err(LanesError::Unknown("tex".into())));
        assert_eq!(names("bulk"), Err(LanesError::Unknown("bulk".into())), "a priority alone is not a modality");
    }

    #[test]
    fn a_lane_is_named_by_its_modality_and_priority_lane() {
        assert_eq!(lane_name(Modality::Document, Lane::Fast), "document-fast");
    }

    #[test]
    fn malformed_or_repeated_lanes_are_refused() {
        assert_eq!(parse("text-fast 1111"), Err(LanesError::Malformed { line: 1 }));
        assert_eq!(parse("a 1 u\na 2 v"), Err(LanesError::Duplicate("a".into())));
        assert_eq!(parse("\n\n"), Ok(Vec::new()));
    }

    #[test]
    fn lambda_states_read_as_paused_or_not() {
        assert!(MappingState::from_lambda("Disabled").paused());
        assert!(MappingState::from_lambda("Disabling").paused());
        assert!(!MappingState::from_lambda("Enabled").paused());
        assert_eq!(MappingState::from_lambda("Updating"), MappingState::Changing);
    }
}
