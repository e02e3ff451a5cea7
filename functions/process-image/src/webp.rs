//! WebP decoded by libwebp, scaled while it decodes: its rescaler averages
//! each row into the smaller picture as the row comes out of the decoder,
//! so the full-size picture is never held (libvips thumbnails WebP the same
//! way). The only unsafe code of the processor: one call into libwebp, with
//! the output written to memory this module owns.
#![allow(unsafe_code)]

use image::{DynamicImage, RgbImage, RgbaImage};
use libwebp_sys as sys;

#[derive(Debug, thiserror::Error)]
pub enum WebpError {
    #[error("libwebp's decoder is not the version these bindings were made for")]
    Version,
    #[error("{width}x{height} is not a size libwebp can scale to")]
    Size { width: u32, height: u32 },
    #[error("libwebp could not decode it: {0:?}")]
    Decode(sys::VP8StatusCode),
}

/// The first frame of a still WebP, as `width`×`height` RGB (RGBA with
/// `alpha`); libwebp scales when that is not the picture's own size.
pub fn decode_scaled(bytes: &[u8], width: u32, height: u32, alpha: bool) -> Result<DynamicImage, WebpError> {
    let too_big = || WebpError::Size { width, height };
    let channels: usize = if alpha { 4 } else { 3 };
    let stride = (width as usize).checked_mul(channels).ok_or_else(too_big)?;
    let mut pixels = vec![0u8; stride.checked_mul(height as usize).ok_or_else(too_big)?];
    let mut config = sys::WebPDecoderConfig::new().map_err(|()| WebpError::Version)?;
    let (features_width, features_height) = features(bytes)?;
    if (features_width, features_height) != (width, height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = i32::try_from(width).map_err(|_| too_big())?;
        config.options.scaled_height = i32::try_from(height).map_err(|_| too_big())?;
    }
    config.output.colorspace = if alpha { sys::WEBP_CSP_MODE::MODE_RGBA } else { sys::WEBP_CSP_MODE::MODE_RGB };
    config.output.is_external_memory = 1;
    config.output.u.RGBA =
        sys::WebPRGBABuffer { rgba: pixels.as_mut_ptr(), stride: i32::try_from(stride).map_err(|_| too_big())?, size: pixels.len() };
    // SAFETY: libwebp reads `bytes` within its length and writes only into
    // `pixels`, whose address, stride and length the output buffer gives and
    // which outlives the call; `config` was initialised by libwebp itself.
    let status = unsafe { sys::WebPDecode(bytes.as_ptr(), bytes.len(), &raw mut config) };
    // SAFETY: the output is external memory, so this frees only what libwebp
    // may have allocated for itself (nothing); `config.output` is not used after.
    unsafe { sys::WebPFreeDecBuffer(&raw mut config.output) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(WebpError::Decode(status));
    }
    let image = if alpha {
        RgbaImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(too_big)
}

/// The picture's own size, from its header.
fn features(bytes: &[u8]) -> Result<(u32, u32), WebpError> {
    let mut features = sys::WebPBitstreamFeatures { width: 0, height: 0, has_alpha: 0, has_animation: 0, format: 0, pad: [0; 5] };
    // SAFETY: libwebp reads `bytes` within its length and writes `features`.
    let status = unsafe { sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &raw mut features) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(WebpError::Decode(status));
    }
    let size = |v: i32| u32::try_from(v).map_err(|_| WebpError::Decode(sys::VP8StatusCode::VP8_STATUS_BITSTREAM_ERROR));
    Ok((size(features.width)?, size(features.height)?))
}
