// zlib and gzip through the Compression Streams API (Chromium, Firefox, Safari 16.4+, Node 18+).
// Its "deflate" format is the zlib stream (RFC 1950) that Python's zlib.compress writes; "gzip" is RFC 1952.

export type CompressionFormatName = "deflate" | "gzip";

export class DecompressionError extends Error {}

async function collect(reader: ReadableStreamDefaultReader<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      // Bounded: a small input must not inflate without limit (zip bombs).
      await reader.cancel().catch(() => undefined);
      throw new DecompressionError(`the data expands to more than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function streamOf(data: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(data);
      controller.close();
    },
  });
}

export async function compressBytes(data: Uint8Array, format: CompressionFormatName): Promise<Uint8Array> {
  const stream = streamOf(data).pipeThrough(
    new CompressionStream(format) as ReadableWritablePair<Uint8Array, Uint8Array>,
  );
  return collect(stream.getReader(), Infinity);
}

/** The inflated bytes; DecompressionError for corrupt or truncated data, or more than ``maxBytes``. */
export async function decompressBytes(
  data: Uint8Array,
  format: CompressionFormatName,
  maxBytes = Infinity,
): Promise<Uint8Array> {
  const stream = streamOf(data).pipeThrough(
    new DecompressionStream(format) as ReadableWritablePair<Uint8Array, Uint8Array>,
  );
  try {
    return await collect(stream.getReader(), maxBytes);
  } catch (error) {
    if (error instanceof DecompressionError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new DecompressionError(`the ${format === "gzip" ? "gzip" : "zlib"} data is corrupt: ${reason}`);
  }
}
