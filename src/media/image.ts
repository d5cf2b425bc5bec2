import type Sharp from 'sharp';
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
// A small file can declare a huge canvas (a decompression bomb): refused before decoding.
const MAX_INPUT_PIXELS = 40_000_000;

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

/**
 * An uploaded avatar, re-encoded: JPEG, PNG or WebP only (by content), turned upright by its
 * EXIF orientation, cropped to a centred square of at most AVATAR_PX, with every piece of
 * metadata left behind (sharp writes none unless asked: EXIF with its GPS position, XMP, ICC,
 * comments are all dropped). The output is in the input's type.
 */
export async function processAvatar(data: Buffer): Promise<{ data: Buffer; type: ImageType }> {
  const type = sniffImage(data);
  if (!type) throw refuse('the file is not a JPEG, PNG or WebP image');
  const options = { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' as const };
  let width: number;
  let height: number;
  try {
    const meta = await sharp()(data, options).metadata();
    if (meta.format !== type) throw new Error('content and decoder disagree');
    const upright = (meta.orientation ?? 1) >= 5;
    width = (upright ? meta.height : meta.width) ?? 0;
    height = (upright ? meta.width : meta.height) ?? 0;
  } catch {
    throw refuse('the image cannot be read');
  }
  if (!width || !height) throw refuse('the image cannot be read');
  const side = Math.min(AVATAR_PX, width, height);
  let pipeline = sharp()(data, options).rotate().resize(side, side, { fit: 'cover', position: 'centre' });
  if (type === 'jpeg') pipeline = pipeline.jpeg({ quality: 85, mozjpeg: true });
  else if (type === 'png') pipeline = pipeline.png({ compressionLevel: 9 });
  else pipeline = pipeline.webp({ quality: 85 });
  try {
    return { data: await pipeline.toBuffer(), type };
  } catch {
    throw refuse('the image cannot be decoded');
  }
}
