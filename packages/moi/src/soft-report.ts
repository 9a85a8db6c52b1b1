/** What Soft Thinking reports per row and step (the engine's events and traces carry it). */
export type ThinkEndReason = 'argmax' | 'cold_stop';

/** Per step and row: the phase the token belongs to, S (soft phase only), and whether it ended thinking. */
export interface SoftStepReport {
  phase: 'thinking' | 'answer';
  /** S in nats (null after thinking) */
  entropy: number | null;
  /** set on the step whose token ends thinking */
  thinkEnd: ThinkEndReason | null;
}
