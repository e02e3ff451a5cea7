//! Reading an image: header checks before decoding, EXIF, the first frame
//! with its orientation applied, thumbnails, palette and perceptual hash.
//! Pure and synchronous; the handler runs it on a blocking thread.

use std::io::Cursor;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::domain::results::{ExifSummary, ImageResult, PaletteColor, Thumbnail};
use prism_shared::domain::workflow::Action;

pub const SCHEMA_VERSION: u32 = 1;

/// Bounds checked from the header, before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_pixels: u64,
    /// Bytes the decoder may allocate.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        // 100 megapixels decode to 400 MB of RGBA: within a 1 GB function.
        Self { max_pixels: 100_000_000, max_alloc: 512 * 1024 * 1024 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{width}x{height} is {} pixels, over the limit of {limit}", u64::from(*width) * u64::from(*height))]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    #[error("cancelled")]
    Cancelled,
}

impl WorkError for ImageError {
    /// A decoder panic is a property of this file.
    const PANIC_CODE: &'static str = "corrupt_image";

    fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported_format",
            Self::TooManyPixels { .. } => "too_many_pixels",
            Self::Corrupt(_) => "corrupt_image",
            Self::Cancelled => "cancelled",
        }
    }
}

impl From<image::ImageError> for ImageError {
    fn from(e: image::ImageError) -> Self {
        match e {
            image::ImageError::Unsupported(u) => Self::Unsupported(u.to_string()),
            image::ImageError::Limits(l) => Self::Corrupt(format!("over the decoder's memory limit: {l}")),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

/// An encoded thumbnail.
#[derive(Debug, Clone)]
pub struct EncodedThumbnail {
    pub meta: Thumbnail,
    pub file: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Analysed {
    pub result: ImageResult,
    pub thumbnails: Vec<EncodedThumbnail>,
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(_) => Ok(reader),
        None => Err(ImageError::Unsupported("not an image format this build decodes (JPEG, PNG, GIF, WebP, BMP, TIFF)".into())),
    }
}

/// Width and height from the header alone, refused over `limits` before anything is allocated.
pub fn check_header(bytes: &[u8], limits: &ImageLimits) -> Result<(ImageFormat, u32, u32), ImageError> {
    let reader = reader(bytes)?;
    let format = reader.format().ok_or_else(|| ImageError::Unsupported("unknown format".into()))?;
    let (width, height) = reader.into_dimensions()?;
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    Ok((format, width, height))
}

/// The first frame, upright, as RGB8 or RGBA8.
struct Decoded {
    source: DynamicImage,
    /// The orientation turned it by 90° (so it shows height × width).
    turned: bool,
    color_type: image::ColorType,
    exif: Option<Vec<u8>>,
    warnings: Vec<String>,
}

/// Decodes the first frame; with `at_least`, a JPEG may come out smaller,
/// but never under `at_least` pixels on its longest edge.
fn decode(bytes: &[u8], limits: &ImageLimits, at_least: Option<u32>) -> Result<Decoded, ImageError> {
    if let Some(edge) = at_least {
        let shrunk = match image::guess_format(bytes).ok() {
            Some(ImageFormat::Jpeg) => decode_jpeg_scaled(bytes, limits, edge)?,
            Some(ImageFormat::Png) => decode_png_shrunk(bytes, limits, edge)?,
            Some(ImageFormat::WebP) => decode_webp_scaled(bytes, limits, edge)?,
            Some(ImageFormat::Tiff) => decode_tiff_shrunk(bytes, limits, edge)?,
            _ => None,
        };
        if let Some(decoded) = shrunk {
            return Ok(decoded);
        }
    }
    let mut reader = reader(bytes)?;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder()?;
    let mut warnings = Vec::new();
    let orientation = decoder.orientation().unwrap_or_else(|e| {
        warnings.push(format!("EXIF orientation unreadable, shown as stored: {e}"));
        image::metadata::Orientation::NoTransforms
    });
    let exif = decoder.exif_metadata().ok().flatten();
    let color_type = decoder.color_type();
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let source = if color_type.has_alpha() { DynamicImage::ImageRgba8(img.into_rgba8()) } else { DynamicImage::ImageRgb8(img.into_rgb8()) };
    Ok(Decoded { source, turned: turns(orientation), color_type, exif, warnings })
}

/// JPEGs shrink on load, as libvips does: the inverse DCT at 1/2, 1/4 or 1/8
/// scale yields a smaller image directly, at a fraction of a full decode's
/// time and memory. `None` for CMYK JPEGs, which take the full path.
fn decode_jpeg_scaled(bytes: &[u8], limits: &ImageLimits, edge: u32) -> Result<Option<Decoded>, ImageError> {
    use jpeg_decoder::PixelFormat;
    let corrupt = |e: jpeg_decoder::Error| ImageError::Corrupt(e.to_string());
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| ImageError::Corrupt("no JPEG frame header".into()))?;
    if info.pixel_format == PixelFormat::CMYK32 {
        return Ok(None);
    }
    let (w, h) = fit(u32::from(info.width), u32::from(info.height), edge);
    decoder.scale(u16::try_from(w).unwrap_or(u16::MAX), u16::try_from(h).unwrap_or(u16::MAX)).map_err(corrupt)?;
    let pixels = decoder.decode().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| ImageError::Corrupt("no JPEG frame header".into()))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let wrong_size = || ImageError::Corrupt("the decoded JPEG is not the size its header gives".into());
    let (img, color_type) = match info.pixel_format {
        PixelFormat::L8 => {
            (DynamicImage::ImageLuma8(image::GrayImage::from_raw(width, height, pixels).ok_or_else(wrong_size)?), image::ColorType::L8)
        }
        PixelFormat::L16 => {
            let wide: Vec<u16> = pixels.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            (DynamicImage::ImageLuma16(image::ImageBuffer::from_raw(width, height, wide).ok_or_else(wrong_size)?), image::ColorType::L16)
        }
        PixelFormat::RGB24 | PixelFormat::CMYK32 => {
            (DynamicImage::ImageRgb8(image::RgbImage::from_raw(width, height, pixels).ok_or_else(wrong_size)?), image::ColorType::Rgb8)
        }
    };
    let exif = decoder.exif_data().map(<[u8]>::to_vec);
    let orientation = exif_orientation(exif.as_deref());
    Ok(Some(Decoded::upright(DynamicImage::ImageRgb8(img.into_rgb8()), orientation, color_type, exif)))
}

/// PNGs shrink on load too: rows are averaged in blocks as they are
/// inflated (see [`crate::shrink`]), so neither the whole picture nor a
/// second copy of it in another pixel type is ever held; 16-bit samples are
/// cut to 8 as they are read. A picture under twice the thumbnail's size is
/// read at full size the same way, into RGB(A) directly. `None` for an
/// interlaced file, whose rows arrive out of order: it takes the full decode.
fn decode_png_shrunk(bytes: &[u8], limits: &ImageLimits, edge: u32) -> Result<Option<Decoded>, ImageError> {
    let corrupt = |e: png::DecodingError| ImageError::Corrupt(e.to_string());
    let bytes_limit = png::Limits { bytes: usize::try_from(limits.max_alloc).unwrap_or(usize::MAX) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), bytes_limit);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    if info.interlaced {
        return Ok(None);
    }
    let factor = crate::shrink::factor(width.max(height), edge);
    let sixteen = info.bit_depth == png::BitDepth::Sixteen;
    let exif = info.exif_metadata.as_deref().map(<[u8]>::to_vec);
    let (output, _) = reader.output_color_type();
    // As the `image` crate reports it (its decoder expands, keeping 16 bits).
    let color_type = match (output, sixteen) {
        (png::ColorType::Grayscale, false) => image::ColorType::L8,
        (png::ColorType::Grayscale, true) => image::ColorType::L16,
        (png::ColorType::GrayscaleAlpha, false) => image::ColorType::La8,
        (png::ColorType::GrayscaleAlpha, true) => image::ColorType::La16,
        (png::ColorType::Rgb | png::ColorType::Indexed, false) => image::ColorType::Rgb8,
        (png::ColorType::Rgb | png::ColorType::Indexed, true) => image::ColorType::Rgb16,
        (png::ColorType::Rgba, false) => image::ColorType::Rgba8,
        (png::ColorType::Rgba, true) => image::ColorType::Rgba16,
    };
    let channels = output.samples();
    let mut shrink = crate::shrink::BoxShrink::new(width, height, factor, color_type.has_alpha());
    while let Some(row) = reader.next_row().map_err(corrupt)? {
        shrink.push(row.data(), channels);
    }
    let img = shrink.finish().ok_or_else(|| ImageError::Corrupt("the PNG ended before its last row".into()))?;
    Ok(Some(Decoded::upright(img, exif_orientation(exif.as_deref()), color_type, exif)))
}

/// Still WebPs shrink on load through libwebp's scaling decoder (see
/// [`crate::webp`]), by the same factor as PNGs. The header, colour type and
/// EXIF come from the `image` crate's reader, which decodes no pixels for
/// them. `None` for an animated WebP: its first frame takes the full decode.
fn decode_webp_scaled(bytes: &[u8], limits: &ImageLimits, edge: u32) -> Result<Option<Decoded>, ImageError> {
    let mut decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))?;
    if decoder.has_animation() {
        return Ok(None);
    }
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    let color_type = decoder.color_type();
    let exif = decoder.exif_metadata().ok().flatten();
    let factor = crate::shrink::factor(width.max(height), edge);
    let (scaled_width, scaled_height) = (width.div_ceil(factor), height.div_ceil(factor));
    let img = crate::webp::decode_scaled(bytes, scaled_width, scaled_height, color_type.has_alpha())
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    Ok(Some(Decoded::upright(img, exif_orientation(exif.as_deref()), color_type, exif)))
}

/// TIFFs stored in strips shrink on load like PNGs: each strip is decoded
/// and its rows averaged into the smaller picture before the next is read.
/// Orientation and EXIF come from the `image` crate's reader, as on the full
/// path. `None` (the full decode) for tiled or planar files and for sample
/// types other than 8- or 16-bit grey, grey and alpha, RGB and RGBA.
fn decode_tiff_shrunk(bytes: &[u8], limits: &ImageLimits, edge: u32) -> Result<Option<Decoded>, ImageError> {
    use tiff::ColorType as Tiff;
    use tiff::decoder::{ChunkType, DecodingResult};
    let corrupt = |e: tiff::TiffError| ImageError::Corrupt(e.to_string());
    let mut header = image::codecs::tiff::TiffDecoder::new(Cursor::new(bytes))?;
    let orientation = header.orientation()?;
    let exif = header.exif_metadata().ok().flatten();
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size = usize::try_from(limits.max_alloc).unwrap_or(usize::MAX);
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(bytes)).map_err(corrupt)?.with_limits(tiff_limits);
    let (width, height) = decoder.dimensions().map_err(corrupt)?;
    let (color_type, channels) = match decoder.colortype().map_err(corrupt)? {
        Tiff::Gray(8) => (image::ColorType::L8, 1),
        Tiff::Gray(16) => (image::ColorType::L16, 1),
        Tiff::GrayA(8) => (image::ColorType::La8, 2),
        Tiff::GrayA(16) => (image::ColorType::La16, 2),
        Tiff::RGB(8) => (image::ColorType::Rgb8, 3),
        Tiff::RGB(16) => (image::ColorType::Rgb16, 3),
        Tiff::RGBA(8) => (image::ColorType::Rgba8, 4),
        Tiff::RGBA(16) => (image::ColorType::Rgba16, 4),
        _ => return Ok(None),
    };
    let planar = decoder.find_tag_unsigned::<u16>(tiff::tags::Tag::PlanarConfiguration).map_err(corrupt)?;
    if decoder.get_chunk_type() != ChunkType::Strip || planar == Some(2) {
        return Ok(None);
    }
    let factor = crate::shrink::factor(width.max(height), edge);
    let mut shrink = crate::shrink::BoxShrink::new(width, height, factor, color_type.has_alpha());
    let row_samples = width as usize * channels;
    let mut narrowed = Vec::with_capacity(row_samples);
    for strip in 0..decoder.strip_count().map_err(corrupt)? {
        match decoder.read_chunk(strip).map_err(corrupt)? {
            DecodingResult::U8(samples) => samples.chunks_exact(row_samples).for_each(|row| shrink.push(row, channels)),
            DecodingResult::U16(samples) => {
                for row in samples.chunks_exact(row_samples) {
                    narrowed.clear();
                    narrowed.extend(row.iter().map(|v| (v >> 8) as u8));
                    shrink.push(&narrowed, channels);
                }
            }
            _ => return Ok(None),
        }
    }
    let img = shrink.finish().ok_or_else(|| ImageError::Corrupt("the TIFF ended before its last row".into()))?;
    Ok(Some(Decoded::upright(img, orientation, color_type, exif)))
}

/// The orientation an EXIF block gives, upright when it gives none.
fn exif_orientation(exif: Option<&[u8]>) -> image::metadata::Orientation {
    exif.and_then(|raw| exif::Reader::new().read_raw(raw.to_vec()).ok())
        .and_then(|e| e.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)))
        .and_then(|o| u8::try_from(o).ok())
        .and_then(image::metadata::Orientation::from_exif)
        .unwrap_or(image::metadata::Orientation::NoTransforms)
}

impl Decoded {
    /// A first frame decoded by one of the shrink-on-load paths, turned upright.
    fn upright(
        mut img: DynamicImage,
        orientation: image::metadata::Orientation,
        color_type: image::ColorType,
        exif: Option<Vec<u8>>,
    ) -> Self {
        img.apply_orientation(orientation);
        Self { source: img, turned: turns(orientation), color_type, exif, warnings: Vec::new() }
    }
}

fn turns(orientation: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::{Rotate90, Rotate90FlipH, Rotate270, Rotate270FlipH};
    matches!(orientation, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Which of the work a job asks for: all of it, or one workflow step's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    All,
    /// The thumbnails and the image's facts, without palette and hash.
    Thumbnails,
    /// The palette and hash (and the facts), without thumbnails.
    Palette,
}

impl Parts {
    /// The part a command's workflow action names; a plain job does all.
    pub fn for_action(action: Option<Action>) -> Self {
        match action {
            Some(Action::ImageThumbnails) => Self::Thumbnails,
            Some(Action::ImagePalette) => Self::Palette,
            _ => Self::All,
        }
    }

    fn thumbnails(self) -> bool {
        self != Self::Palette
    }

    fn palette(self) -> bool {
        self != Self::Thumbnails
    }
}

/// The longest edge of the copy the palette and hash are found in: the same
/// answer as from the whole image at a fraction of the work.
const PALETTE_EDGE: u32 = 64;

/// Reads the image and makes what `parts` asks for: a thumbnail for each
/// longest-edge size in `sizes`, the palette and the hash, reporting to
/// `progress` after each step and stopping at the next one once the job is
/// cancelled. Decoding shrinks on load to the largest size needed.
pub fn analyse(bytes: &[u8], limits: &ImageLimits, sizes: &[u32], parts: Parts, progress: &Progress) -> Result<Analysed, ImageError> {
    let sizes = if parts.thumbnails() { sizes } else { &[] };
    let steps = sizes.len() as f32 + 2.0;
    let step = |done: usize| {
        if progress.cancelled() {
            return Err(ImageError::Cancelled);
        }
        progress.report(done as f32 / steps);
        Ok(())
    };
    let (format, width, height) = check_header(bytes, limits)?;
    let at_least = sizes.iter().copied().max().unwrap_or(PALETTE_EDGE);
    let Decoded { source, turned, color_type, exif, mut warnings } = decode(bytes, limits, Some(at_least))?;
    step(1)?;
    let exif = exif.and_then(|raw| exif_summary(raw, &mut warnings));
    let animated = is_animated(bytes, format);
    let has_alpha = color_type.has_alpha();
    // From the header, not the decoded copy: a JPEG may have been decoded smaller.
    let (display_width, display_height) = if turned { (height, width) } else { (width, height) };
    let mut resizer = Resizer::new();
    let mut thumbnails = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        thumbnails.push(make_thumbnail(&mut resizer, &source, (display_width, display_height), size)?);
        step(i + 2)?;
    }
    let (palette, perceptual_hash) = if parts.palette() {
        let (sw, sh) = fit(source.width(), source.height(), PALETTE_EDGE);
        let small = resize(&mut resizer, &source, sw, sh)?.into_rgb8();
        (self::palette(&small, 5), Some(format!("{:016x}", dhash(&DynamicImage::ImageRgb8(small)))))
    } else {
        (Vec::new(), None)
    };
    let result = ImageResult {
        schema_version: SCHEMA_VERSION,
        format: format_name(format).to_owned(),
        width,
        height,
        display_width,
        display_height,
        color_type: format!("{color_type:?}").to_lowercase(),
        has_alpha,
        animated,
        exif,
        palette,
        perceptual_hash,
        thumbnails: thumbnails.iter().map(|t| t.meta.clone()).collect(),
        warnings,
    };
    Ok(Analysed { result, thumbnails })
}

/// One thumbnail, as `prism thumbnail` and the benchmark make it: decode,
/// orient, resize, encode; no palette, hash or EXIF summary.
pub fn thumbnail(bytes: &[u8], limits: &ImageLimits, size: u32) -> Result<EncodedThumbnail, ImageError> {
    let (_, width, height) = check_header(bytes, limits)?;
    let decoded = decode(bytes, limits, Some(size))?;
    let display = if decoded.turned { (height, width) } else { (width, height) };
    make_thumbnail(&mut Resizer::new(), &decoded.source, display, size)
}

/// A thumbnail of `source` sized from the image's full `display` size (the
/// source may be a shrunk-on-load copy, at least as large as the thumbnail).
fn make_thumbnail(resizer: &mut Resizer, source: &DynamicImage, display: (u32, u32), size: u32) -> Result<EncodedThumbnail, ImageError> {
    let (width, height) = fit(display.0, display.1, size);
    let (width, height) = (width.min(source.width()), height.min(source.height()));
    let (bytes, content_type, ext) = encode(&resize(resizer, source, width, height)?)?;
    let meta = Thumbnail { name: format!("thumbnail_{size}"), width, height, content_type: content_type.into() };
    Ok(EncodedThumbnail { meta, file: format!("thumbnail-{size}.{ext}"), bytes })
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::Gif => "gif",
        ImageFormat::WebP => "webp",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => "other",
    }
}

/// Dimensions with the longest edge at most `size`, aspect kept, never upscaled.
pub fn fit(width: u32, height: u32, size: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= size {
        return (width.max(1), height.max(1));
    }
    let scale = f64::from(size) / f64::from(longest);
    let scaled = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (scaled(width), scaled(height))
}

fn resize(resizer: &mut Resizer, source: &DynamicImage, width: u32, height: u32) -> Result<DynamicImage, ImageError> {
    if (width, height) == (source.width(), source.height()) {
        return Ok(source.clone());
    }
    let mut target = match source {
        DynamicImage::ImageRgba8(_) => DynamicImage::new_rgba8(width, height),
        _ => DynamicImage::new_rgb8(width, height),
    };
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    resizer.resize(source, &mut target, &options).map_err(|e| ImageError::Corrupt(format!("resizing: {e}")))?;
    Ok(target)
}

/// Opaque thumbnails as JPEG (quality 82), ones with alpha as lossless WebP.
/// Nothing of the source's metadata is written: no EXIF, so no location.
fn encode(img: &DynamicImage) -> Result<(Vec<u8>, &'static str, &'static str), ImageError> {
    let mut out = Vec::new();
    let failed = |e: image::ImageError| ImageError::Corrupt(format!("encoding a thumbnail: {e}"));
    match img {
        DynamicImage::ImageRgba8(rgba) => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(rgba.as_raw(), rgba.width(), rgba.height(), image::ExtendedColorType::Rgba8)
                .map_err(failed)?;
            Ok((out, "image/webp", "webp"))
        }
        other => {
            let rgb = other.to_rgb8();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82).encode_image(&rgb).map_err(failed)?;
            Ok((out, "image/jpeg", "jpg"))
        }
    }
}

fn is_animated(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Gif => image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).is_ok_and(|d| d.into_frames().take(2).count() > 1),
        ImageFormat::WebP => image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).is_ok_and(|d| d.has_animation()),
        _ => false,
    }
}

fn exif_summary(raw: Vec<u8>, warnings: &mut Vec<String>) -> Option<ExifSummary> {
    let exif = match exif::Reader::new().read_raw(raw) {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("EXIF unreadable: {e}"));
            return None;
        }
    };
    let text = |tag| {
        exif.get_field(tag, exif::In::PRIMARY)
            .map(|f| f.display_value().to_string().trim_matches('"').trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let orientation = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)).unwrap_or(1);
    let has_gps = exif.fields().any(|f| f.ifd_num == exif::In::PRIMARY && f.tag.context() == exif::Context::Gps)
        || exif.get_field(exif::Tag::GPSInfoIFDPointer, exif::In::PRIMARY).is_some();
    Some(ExifSummary {
        orientation: u16::try_from(orientation).unwrap_or(1),
        make: text(exif::Tag::Make),
        model: text(exif::Tag::Model),
        taken_at: text(exif::Tag::DateTimeOriginal).or_else(|| text(exif::Tag::DateTime)),
        software: text(exif::Tag::Software),
        has_gps,
    })
}

/// Dominant colours by median cut: split the box of pixels with the widest
/// channel range at its median until there are `k` boxes; each box's mean
/// is a colour.
pub fn palette(img: &image::RgbImage, k: usize) -> Vec<PaletteColor> {
    let mut boxes: Vec<Vec<[u8; 3]>> = vec![img.pixels().map(|p| p.0).collect()];
    let total = boxes[0].len().max(1) as f32;
    while boxes.len() < k {
        let widest = boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() > 1)
            .map(|(i, b)| {
                let (channel, range) = (0..3)
                    .map(|c| {
                        let (lo, hi) = b.iter().fold((255u8, 0u8), |(lo, hi), p| (lo.min(p[c]), hi.max(p[c])));
                        (c, hi - lo)
                    })
                    .max_by_key(|(_, r)| *r)
                    .unwrap_or((0, 0));
                (i, channel, range)
            })
            .filter(|(_, _, range)| *range > 0)
            .max_by_key(|(_, _, range)| *range);
        let Some((i, channel, _)) = widest else { break };
        let mut b = boxes.swap_remove(i);
        b.sort_unstable_by_key(|p| p[channel]);
        let upper = b.split_off(b.len() / 2);
        boxes.push(b);
        boxes.push(upper);
    }
    let mut colours: Vec<PaletteColor> = boxes
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| {
            let n = b.len() as u64;
            let mean = |c: usize| (b.iter().map(|p| u64::from(p[c])).sum::<u64>() / n) as u8;
            PaletteColor { hex: format!("#{:02x}{:02x}{:02x}", mean(0), mean(1), mean(2)), share: b.len() as f32 / total }
        })
        .collect();
    colours.sort_by(|a, b| b.share.total_cmp(&a.share));
    colours
}

/// Difference hash: 9×8 grey, one bit per horizontally adjacent pair.
pub fn dhash(img: &DynamicImage) -> u64 {
    let grey = img.resize_exact(9, 8, image::imageops::FilterType::Triangle).into_luma8();
    let mut hash = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            hash = (hash << 1) | u64::from(grey.get_pixel(x, y).0[0] < grey.get_pixel(x + 1, y).0[0]);
        }
    }
    hash
}

/// Bits that differ between two hashes.
pub fn hash_distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1200x800 gradient in `format`.
    fn encoded(format: ImageFormat) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(1200, 800, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    #[test]
    fn png_webp_and_tiff_are_shrunk_while_they_are_decoded() {
        for format in [ImageFormat::Png, ImageFormat::WebP, ImageFormat::Tiff] {
            let bytes = encoded(format);
            let shrunk = decode(&bytes, &ImageLimits::default(), Some(256)).expect("decoded");
            assert_eq!(
                (shrunk.source.width(), shrunk.source.height()),
                (600, 400),
                "{format:?}: shrunk by 2 on its way to a 256 px thumbnail"
            );
            let whole = decode(&bytes, &ImageLimits::default(), None).expect("decoded");
            assert_eq!((whole.source.width(), whole.source.height()), (1200, 800), "{format:?}: no thumbnail, no shrink");
        }
    }
}
