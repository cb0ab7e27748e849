/**
 * A progress bar for long work: on a terminal, one line redrawn in place (at most 10 times a
 * second); elsewhere (logs, CI), a plain line every `everySeconds`. Writes to stderr so stdout stays
 * machine-readable.
 */

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Label in front of the bar. */
  label: string;
  /** Total units (steps, bytes); 0 = unknown. */
  total: number;
  /** Seconds between lines when not on a terminal (default 10). */
  everySeconds?: number;
  /** Stream (default process.stderr); `null` silences the bar. */
  stream?: NodeJS.WriteStream | null;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A progress bar. */
export class Progress {
  private readonly start = performance.now();
  private last = 0;
  private readonly tty: boolean;
  private readonly stream: NodeJS.WriteStream | null;
  private startDone = -1;
  private finishing = false;

  constructor(private readonly o: ProgressOptions) {
    this.stream = o.stream === undefined ? process.stderr : o.stream;
    this.tty = !!this.stream?.isTTY;
  }

  /** Reports `done` units and extra fields (e.g. loss, tok/s). */
  update(done: number, fields: Record<string, string> = {}, force = false): void {
    if (!this.stream) return;
    if (this.startDone < 0) this.startDone = done;
    const now = performance.now();
    // on a terminal `force` draws at once (a fresh loss); in a log file only the interval counts,
    // so that forced updates do not flood it
    const gap = this.tty ? 100 : (this.o.everySeconds ?? 10) * 1000;
    if ((!force || !this.tty) && now - this.last < gap && !this.finishing) return;
    this.last = now;
    const elapsed = (now - this.start) / 1000;
    const total = this.o.total;
    const rate = (done - this.startDone) / Math.max(elapsed, 1e-9);
    const eta = total > 0 && rate > 0 ? (total - done) / rate : NaN;
    const width = 24;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const bar = total > 0 ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ` : '';
    const extra = Object.entries(fields)
      .map(([k, v]) => `${k} ${v}`)
      .join('  ');
    const line = `${this.o.label} ${bar}${done}${total > 0 ? `/${total}` : ''}  ${extra}  elapsed ${fmtTime(elapsed)}${total > 0 ? `  eta ${fmtTime(eta)}` : ''}`;
    if (this.tty) this.stream.write(`\r\x1b[K${line}`);
    else this.stream.write(`${line}\n`);
  }

  /** Ends the bar (a final newline on a terminal). */
  finish(done: number, fields: Record<string, string> = {}): void {
    this.finishing = true;
    this.update(done, fields, true);
    if (this.tty && this.stream) this.stream.write('\n');
  }
}
