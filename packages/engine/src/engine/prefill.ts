/**
 * The prefill-chunk rule, one for `generate()`, chat sessions and the `Scheduler`: a prompt is
 * prefilled `chunk` tokens at a time, and a remainder of one token joins the chunk before it. (A
 * one-token forward runs the decode path, whose arithmetic differs from prefill's; merged, a
 * chunked prompt gives the same logits, bit for bit, as the prompt prefilled at once.)
 */

/** Where the prefill chunk that starts at `done` ends, for a prompt of `total` tokens. */
export function prefillChunkEnd(done: number, total: number, chunk: number): number {
  const size = Math.max(1, Math.floor(chunk));
  let end = Math.min(total, done + size);
  if (total - end === 1) end = total;
  return end;
}
