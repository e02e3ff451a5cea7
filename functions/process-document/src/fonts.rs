//! Fonts for the preview of PDFs that name a font without embedding it (the
//! standard 14, Helvetica and Times above all, which PDF generators leave out
//! because every viewer has them). The renderer looks such fonts up among the
//! system's, and Lambda's OS has none: every glyph would be drawn as a box.
//! So the function writes DejaVu Sans (which `pdf_oxide` carries) into a
//! directory its font database searches, `$HOME/.fonts`, before the first
//! page is drawn; the template sets `HOME=/tmp` (Lambda sets no `HOME`) and
//! `FALLBACK_FONTS_DIR=/tmp/.fonts`. Where the OS has fonts they still win.

use std::io::Write;
use std::path::{Path, PathBuf};

use pdf_oxide::fonts::bundled::{DEJAVU_SANS, DEJAVU_SANS_BOLD};
use prism_shared::{ConfigError, runtime::config};

pub const FALLBACK_FONTS_DIR: &str = "FALLBACK_FONTS_DIR";

/// The faces written, by file name.
pub const FALLBACK_FACES: [(&str, &[u8]); 2] = [("prism-DejaVuSans.ttf", DEJAVU_SANS), ("prism-DejaVuSans-Bold.ttf", DEJAVU_SANS_BOLD)];

/// `FALLBACK_FONTS_DIR`, which must be `$HOME/.fonts`: the one directory
/// the font database searches that a function can write to.
pub fn fallback_dir_from_env() -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = config::optional(FALLBACK_FONTS_DIR).map(PathBuf::from) else { return Ok(None) };
    let searched = config::optional("HOME").map(|home| Path::new(&home).join(".fonts"));
    if searched.as_deref() != Some(dir.as_path()) {
        let reason = format!("{} is not $HOME/.fonts ({searched:?}), where the renderer looks for fonts", dir.display());
        return Err(ConfigError::Invalid { name: FALLBACK_FONTS_DIR, reason });
    }
    Ok(Some(dir))
}

/// Writes the fallback faces into `dir` unless they are there already. Each
/// file appears whole or not at all (written aside, then renamed), so
/// processes starting side by side never see half a font.
pub fn install(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in FALLBACK_FACES {
        let path = dir.join(name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(bytes)?;
        file.persist(&path).map_err(|e| e.error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faces_land_where_the_renderer_finds_them_for_a_standard_font() {
        let dir = tempfile::tempdir().expect("temp dir");
        install(dir.path()).expect("installed");
        install(dir.path()).expect("a second start finds them in place");
        let mut db = fontdb::Database::new();
        db.load_fonts_dir(dir.path());
        assert_eq!(db.len(), 2);
        // The fallback pdf_oxide takes for a Helvetica it cannot find.
        let query = fontdb::Query { families: &[fontdb::Family::Name("DejaVu Sans")], weight: fontdb::Weight::BOLD, ..Default::default() };
        let face = db.query(&query).and_then(|id| db.face(id)).expect("found");
        assert_eq!(face.weight, fontdb::Weight::BOLD);
    }
}
