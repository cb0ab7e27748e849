/** A list of tensors freed together (a step's activations, a backward's temporaries). */

/** Anything with a dispose() (tensors, MoE routings). */
export interface Disposable {
  dispose(): void;
}

/** Collects tensors (and other disposables) and disposes them all at once. */
export class Scope {
  private readonly items: Disposable[] = [];
  /** Registers and returns `t`. */
  keep<T extends Disposable>(t: T): T {
    this.items.push(t);
    return t;
  }
  /** Disposes every registered tensor (idempotent). */
  dispose(): void {
    for (const t of this.items) t.dispose();
    this.items.length = 0;
  }
}
