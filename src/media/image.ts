import type Sharp from 'sharp';
import type { Metadata } from 'sharp';
import { ServiceError } from '../errors';

export type ImageType = 'jpeg' | 'png' | 'webp';

export const IMAGE_TYPES: Record<ImageType, { ext: string; contentType: string }> = {
  jpeg: { ext: 'jpg', contentType: 'image/jpeg' },
  png: { ext: 'png', contentType: 'image/png' },
  webp: { ext: 'webp', contentType: 'image/webp' },
};

/** The content type of a stored file, by its extension: the only types ever stored. */
export function contentTypeOf(ext: string): string | undefined {
  return Object.values(IMAGE_TYPES).find((t) => t.ext === ext)?.contentType;
}

/** The longest side of a stored avatar. */
export const AVATAR_PX = 512;
// A small file can declare a huge canvas (a decompression bomb): refused before decoding. A
// 48 Mpx phone photo passes; what it may cost to decode is the budget's business (decodeCost).
const MAX_INPUT_PIXELS = 50_000_000;
// The avatar is a centred square: past 8:1 it would keep less than an eighth of the picture,
// and a very long side makes each decoded line (and the resizer's window of lines) huge.
const MAX_ASPECT = 8;

/**
 * Bytes a decode of this image holds at its peak, estimated from its header alone (measured
 * against sharp 0.35 in docs/limits.md; within about 25 % above the estimate).
 * - Baseline JPEG and WebP decode straight at a reduced scale (shrink-on-load, 1/8 at most for
 *   JPEG): what is held is the reduced image.
 * - A progressive JPEG keeps every DCT coefficient of the whole image (2 bytes per sample, at
 *   its chroma subsampling) until its last scan; PNG has no reduced decode, and an interlaced
 *   (Adam7) PNG is assembled whole, half as much again; 16-bit samples cost two bytes.
 */
// Measured: a 7960x995 PNG cost ~27 MB to decode where its pixels are 23.8 MB.
const PNG_WINDOW_LINES = 256;
export function decodeCost(
  meta: Pick<Metadata, 'format' | 'width' | 'height' | 'channels' | 'depth' | 'isProgressive' | 'chromaSubsampling'>,
): number {
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  const bands = meta.channels ?? 4;
  const sampleBytes = meta.depth === 'uchar' || meta.depth === 'char' ? 1 : meta.depth === 'float' ? 4 : 2;
  if (meta.format === 'webp' || (meta.format === 'jpeg' && !meta.isProgressive)) {
    const fit = Math.max(1, Math.min(width, height) / AVATAR_PX);
    const shrink = meta.format === 'jpeg' ? Math.min(8, 2 ** Math.floor(Math.log2(fit))) : fit;
    return Math.ceil((width / shrink) * (height / shrink) * bands * sampleBytes);
  }
  if (meta.format === 'jpeg') {
    // J:a:b (4:2:0, 4:2:2...): each chroma plane holds (a + b) / 2J samples per pixel.
    const [j = 4, a = 4, b = 4] = (meta.chromaSubsampling ?? '4:4:4').split(':').map(Number);
    const perPixel = bands >= 3 ? 1 + (2 * (a + b)) / (2 * j) + (bands - 3) : bands;
    return Math.ceil(width * height * perPixel * 2);
  }
  // A PNG streams, but through the resizer's window of lines (a few hundred of them).
  const line = width * bands * sampleBytes;
  return Math.ceil(line * height * (meta.isProgressive ? 1.5 : 1) + line * PNG_WINDOW_LINES);
}

/**
 * sharp with libvips adds about 20 MB to a process's RSS; a process that never gets an avatar
 * upload never loads it. Resolved at once, so a broken install still fails at start.
 */
const SHARP_PATH = require.resolve('sharp');
let loaded: typeof Sharp | undefined;
function sharp(): typeof Sharp {
  if (!loaded) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require(SHARP_PATH) as typeof Sharp;
    // libvips' caches keep decoded images for reuse: an upload is never seen twice.
    loaded.cache(false);
  }
  return loaded;
}

/** The type from the first bytes (magic numbers), whatever the file's name or declared type says. */
export function sniffImage(data: Buffer): ImageType | null {
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'jpeg';
  if (data.length >= 8 && data.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return 'png';
  }
  if (data.length >= 12 && data.toString('latin1', 0, 4) === 'RIFF' && data.toString('latin1', 8, 12) === 'WEBP') {
    return 'webp';
  }
  return null;
}

const refuse = (message: string) => new ServiceError('invalid', message);
const DECODE_OPTIONS = { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' as const };

/** An upload that may be decoded: its type and upright size, and what decoding it costs. */
export interface AvatarSource {
  data: Buffer;
  type: ImageType;
  width: number;
  height: number;
  /** Bytes its decode holds at its peak (decodeCost). */
  cost: number;
}

/**
 * Reads an upload's header only (no pixel is decoded): JPEG, PNG or WebP by content, at most
 * MAX_INPUT_PIXELS, an aspect of at most 8:1, and a decode within `maxDecodeBytes`
 * (AVATAR_DECODE_MAX_BYTES). Anything else is refused (invalid) before it costs a decode.
 */
export async function inspectAvatar(data: Buffer, maxDecodeBytes: number): Promise<AvatarSource> {
  const type = sniffImage(data);
  if (!type) throw refuse('the file is not a JPEG, PNG or WebP image');
  let meta: Metadata;
  try {
    meta = await sharp()(data, DECODE_OPTIONS).metadata();
    if (meta.format !== type) throw new Error('content and decoder disagree');
  } catch {
    throw refuse('the image cannot be read');
  }
  const upright = (meta.orientation ?? 1) >= 5;
  const width = (upright ? meta.height : meta.width) ?? 0;
  const height = (upright ? meta.width : meta.height) ?? 0;
  if (!width || !height) throw refuse('the image cannot be read');
  if (width * height > MAX_INPUT_PIXELS) throw refuse(`the image is larger than ${MAX_INPUT_PIXELS / 1e6} Mpx`);
  if (Math.max(width, height) > MAX_ASPECT * Math.min(width, height)) {
    throw refuse(`the image is longer than ${MAX_ASPECT}:1 on one side`);
  }
  const cost = decodeCost(meta);
  if (cost > maxDecodeBytes) {
    throw refuse(
      `the image costs ${Math.ceil(cost / 1e6)} MB to decode, over ${Math.floor(maxDecodeBytes / 1e6)} MB: ` +
        'send it smaller, or as a baseline (not progressive or interlaced) 8-bit JPEG',
    );
  }
  return { data, type, width, height, cost };
}

/**
 * An uploaded avatar, re-encoded: turned upright by its EXIF orientation, cropped to a centred
 * square of at most AVATAR_PX, with every piece of metadata left behind (sharp writes none
 * unless asked: EXIF with its GPS position, XMP, ICC, comments are all dropped). The output is
 * in the input's type.
 */
export async function renderAvatar(source: AvatarSource): Promise<{ data: Buffer; type: ImageType }> {
  const { data, type, width, height } = source;
  const side = Math.min(AVATAR_PX, width, height);
  let pipeline = sharp()(data, DECODE_OPTIONS).rotate().resize(side, side, { fit: 'cover', position: 'centre' });
  if (type === 'jpeg') pipeline = pipeline.jpeg({ quality: 85, mozjpeg: true });
  else if (type === 'png') pipeline = pipeline.png({ compressionLevel: 9 });
  else pipeline = pipeline.webp({ quality: 85 });
  try {
    return { data: await pipeline.toBuffer(), type };
  } catch {
    throw refuse('the image cannot be decoded');
  }
}
