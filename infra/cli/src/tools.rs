//! The programs on the machine that commands need, with the Debian package of each.

/// What the processors run besides their own code.
pub const PROCESSOR_TOOLS: &[(&str, &str)] = &[("ffmpeg", "ffmpeg")];
/// What the tests and benchmarks compare the processors with or build their corpus from.
pub const CORPUS_TOOLS: &[(&str, &str)] = &[("pdftotext", "poppler-utils"), ("gropdf", "groff")];
/// What the thumbnail benchmark measures process-image against.
pub const REFERENCE_TOOLS: &[(&str, &str)] = &[("vipsthumbnail", "libvips-tools"), ("mogrify", "imagemagick")];

/// What the dashboard's browser test drives: Debian's Chromium over WebDriver.
pub const BROWSER_TOOLS: &[(&str, &str)] = &[("chromium", "chromium"), ("chromedriver", "chromium-driver")];

/// The optimised profile local runs use (release without LTO; see Cargo.toml).
pub const LOCAL_RELEASE: &str = "local-release";
