#!/usr/bin/env python3
"""Randomized-interleaving simulation of grouped_tma256p_nt_bf16's pipeline for one block.

Actors: 4 warpgroups (wg 0 contains thread 0, the TMA issuer), async TMA boxes (A: 32 KiB, all four
8-KiB row quarters of a stage's A part; B: the stage's B part), async wgmma groups (warpgroup w's
step reads A quarter w and B of the stage). Regions: (stage, 'A', q) q = 0..3 and (stage, 'B').
Each region carries a content tag: ('step', g) after a TMA lands, ('tma', g) while one is in flight,
('stage', w) while warpgroup w's epilogue stages there.

mbarrier: count 1; arrive.expect_tx arrives once and adds tx bytes; complete_tx subtracts; the phase
completes when pending arrivals == 0 and tx == 0 (then the phase number increments and pending
arrivals reset to 1). try_wait.parity(P) returns true iff the current phase's parity != P (the
phase with parity P is the immediately preceding, completed one): a fresh barrier (phase 0) passes
a wait on parity 1 at once.

variant: 'kernel' = as written; 'sync' = __syncthreads after wait_group 0 before the epilogue;
'own' = each warpgroup stages in its own A quarter of the last two stages (8 KiB + 8 KiB).
"""
import random
import sys

S = 4
D = S - 2
A_BYTES, B_BYTES = 256 * 64 * 2, 128 * 64 * 2


class Violation(Exception):
    pass


class Sim:
    def __init__(self, tiles, steps, rng, variant='kernel', S_=S):
        self.S = S_
        self.D = S_ - 2
        self.tiles, self.steps, self.rng, self.variant = tiles, steps, rng, variant
        self.tag = {}
        for s in range(self.S):
            for q in range(4):
                self.tag[(s, 'A', q)] = ('garbage',)
            self.tag[(s, 'B')] = ('garbage',)
        self.readers = {r: set() for r in self.tag}  # in-flight wgmma (w, g)
        self.stagers = {r: set() for r in self.tag}  # epilogues using the region
        self.tma_inflight = {r: None for r in self.tag}
        self.unfenced = {r: set() for r in self.tag}  # generic accesses by wg not yet proxy-fenced
        self.bar_phase = [0] * self.S
        self.bar_pend = [1] * self.S
        self.bar_tx = [0] * self.S
        self.bar_init = False
        self.bar_last = [None] * self.S  # the step whose phase completed last
        self.async_ops = []  # ('tma', stage, part, g, bytes) or ('mma', w, g, stage)
        self.groups = [[] for _ in range(4)]  # outstanding wgmma groups per warpgroup (g)
        self.sync_arrived = set()
        self.sync_gen = 0
        self.done = [False] * 4
        self.events = 0
        self.loads_issued = 0
        self.waits = 0
        # per-run speed weights: how often each actor gets scheduled
        self.w_wg = [rng.uniform(0.2, 3.0) for _ in range(4)]
        self.w_tma = rng.uniform(0.05, 3.0)
        self.w_mma = rng.uniform(0.05, 3.0)
        self.epi_len = [rng.randint(0, 12) for _ in range(4)]

    # ---- helpers
    def fail(self, msg):
        raise Violation(msg)

    def a_regions(self, s):
        return [(s, 'A', q) for q in range(4)]

    def tile_exists(self, ti):
        return ti < self.tiles

    def load(self, g):
        """thread 0's load lambda"""
        ti = g // self.steps
        if not self.tile_exists(ti):
            return
        s = g % self.S
        # arrive.expect_tx
        if self.bar_pend[s] != 1:
            self.fail(f'load({g}): barrier {s} pending arrivals {self.bar_pend[s]} (previous phase not complete)')
        self.bar_pend[s] -= 1
        self.bar_tx[s] += A_BYTES + B_BYTES
        for part, regs, nbytes in (('A', self.a_regions(s), A_BYTES), ('B', [(s, 'B')], B_BYTES)):
            for r in regs:
                if self.readers[r]:
                    self.fail(f'(a) TMA step {g} into {r} while wgmma {self.readers[r]} in flight')
                if self.stagers[r]:
                    self.fail(f'(b) TMA step {g} into {r} while epilogue of wg {self.stagers[r]} stages there')
                if self.tma_inflight[r] is not None:
                    self.fail(f'TMA step {g} into {r} while TMA step {self.tma_inflight[r]} in flight')
                if self.unfenced[r]:
                    self.fail(f'(proxy) TMA step {g} into {r} with generic accesses of wg {self.unfenced[r]} not fenced')
                self.tma_inflight[r] = g
                self.tag[r] = ('tma', g)
            self.async_ops.append(('tma', s, part, g, nbytes))
        self.loads_issued += 1

    def complete_tma(self, op):
        _, s, part, g, nbytes = op
        regs = self.a_regions(s) if part == 'A' else [(s, 'B')]
        for r in regs:
            if self.tag[r] != ('tma', g):
                self.fail(f'TMA step {g} landing in {r} found {self.tag[r]} (overwritten during flight)')
            if self.readers[r] or self.stagers[r]:
                self.fail(f'(a/b) TMA step {g} landing in {r} while read/staged {self.readers[r]} {self.stagers[r]}')
            self.tag[r] = ('step', g)
            self.tma_inflight[r] = None
        self.bar_tx[s] -= nbytes
        if self.bar_tx[s] < 0:
            self.fail('tx count negative')
        if self.bar_pend[s] == 0 and self.bar_tx[s] == 0:
            self.bar_phase[s] += 1
            self.bar_pend[s] = 1
            self.bar_last[s] = g

    def complete_mma(self, op):
        _, w, g, s = op
        for r in ((s, 'A', w), (s, 'B')):
            if self.tag[r] != ('step', g):
                self.fail(f'(a/f) wgmma of wg {w} step {g} finished reading {r} but it now holds {self.tag[r]}')
            self.readers[r].discard((w, g))
        self.groups[w].remove(g)

    # ---- the warpgroup program (a generator yielding blocking conditions)
    def wg_prog(self, w):
        S_, D_ = self.S, self.D
        if w == 0:
            for i in range(S_):
                pass
            self.bar_init = True
            for p in range(D_):
                self.load(p)
        g = 0
        i = 0
        while True:
            if not self.tile_exists(i):
                break
            for k in range(self.steps):
                yield ('sync',)
                if w == 0:
                    yield ('step',)  # thread 0's issue takes a while (grouped_tile over E)
                    self.load(g + D_)
                s = g % S_
                par = (g // S_) & 1
                yield ('mbar', s, par)
                self.waits += 1
                # (c): the phase that completed is step g's (not a stale or future one)
                if self.bar_last[s] != g:
                    self.fail(f'(c) wg {w} wait for step {g} (bar {s} parity {par}) returned on step {self.bar_last[s]}\'s phase')
                for r in ((s, 'A', w), (s, 'B')):
                    if self.tag[r] != ('step', g) and self.tag[r][0] != 'stage':
                        self.fail(f'(c) wg {w} wait for step {g} (bar {s} parity {par}) returned; {r} holds {self.tag[r]}')
                yield ('step',)
                for r in ((s, 'A', w), (s, 'B')):
                    if self.tag[r] != ('step', g):
                        self.fail(f'(f) wg {w} issues wgmma step {g} on {r} holding {self.tag[r]}')
                    if self.tma_inflight[r] is not None:
                        self.fail(f'(a) wgmma step {g} reads {r} while TMA in flight')
                    self.readers[r].add((w, g))
                self.groups[w].append(g)
                self.async_ops.append(('mma', w, g, s))
                yield ('wgwait', 1)
                g += 1
            yield ('wgwait', 0)
            if self.variant == 'sync':
                yield ('sync',)
            x, y = (g - 2 + S_) % S_, (g - 1) % S_
            if self.variant == 'own':
                area = [(x, 'A', w), (y, 'A', w)]
            else:
                st = x if w < 2 else y
                area = [(st, 'A', 2 * (w & 1)), (st, 'A', 2 * (w & 1) + 1)]
            yield ('step',)  # bias load, named barrier, packing
            for r in area:
                others = {rd for rd in self.readers[r] if rd[0] != w}
                if self.readers[r] and self.variant != 'kernel-nof':
                    self.fail(f'(f) epilogue of wg {w} (tile {i}, g={g}) writes {r} while wgmma {sorted(self.readers[r])} reads it')
                if self.tma_inflight[r] is not None:
                    self.fail(f'(b) epilogue of wg {w} writes {r} while TMA step {self.tma_inflight[r]} in flight')
                if self.stagers[r]:
                    self.fail(f'epilogue of wg {w} and {self.stagers[r]} share {r}')
                if self.tag[r][0] == 'step' and self.tag[r][1] >= g - 0 and False:
                    pass
                if self.variant != 'kernel-nof':
                    self.tag[r] = ('stage', w)
                self.stagers[r].add(w)
                self.unfenced[r].add(w)
            for _ in range(self.epi_len[w]):
                yield ('step',)
            for r in area:
                if self.tag[r] != ('stage', w) and self.variant != 'kernel-nof':
                    self.fail(f'(b) epilogue of wg {w} read back {r} as {self.tag[r]}')
                self.stagers[r].discard(w)
            # fence.proxy.async by every thread of wg w
            for r in self.tag:
                self.unfenced[r].discard(w)
            i += 1
        self.done[w] = True
        if w == 0:
            pend = [op for op in self.async_ops if op[0] == 'tma']
            if pend:
                self.fail(f'(e) thread 0 exits with TMA in flight: {pend}')

    # ---- scheduler
    def runnable(self, w, cond):
        kind = cond[0]
        if kind == 'step':
            return True
        if kind == 'sync':
            return True  # handled specially: arrival
        if kind == 'mbar':
            _, s, par = cond
            return (self.bar_phase[s] & 1) != par
        if kind == 'wgwait':
            return len(self.groups[w]) <= cond[1]
        raise ValueError(kind)

    def run(self):
        progs = [self.wg_prog(w) for w in range(4)]
        cond = [None] * 4
        for w in range(4):
            try:
                cond[w] = next(progs[w])
            except StopIteration:
                cond[w] = None
        waiting_sync = set()
        while True:
            self.events += 1
            if self.events > 200000:
                self.fail('livelock')
            cands = []
            for w in range(4):
                c = cond[w]
                if c is None or w in waiting_sync:
                    continue
                if self.runnable(w, c):
                    cands.append((self.w_wg[w], ('wg', w)))
            for j, op in enumerate(self.async_ops):
                cands.append((self.w_tma if op[0] == 'tma' else self.w_mma, ('op', j)))
            if not cands:
                if all(c is None for c in cond):
                    break
                self.fail(f'(d) deadlock: conds {cond}, sync {waiting_sync}, phases {self.bar_phase}, pend {self.bar_pend}, tx {self.bar_tx}')
            tot = sum(c[0] for c in cands)
            u = self.rng.uniform(0, tot)
            for wt, act in cands:
                u -= wt
                if u <= 0:
                    break
            if act[0] == 'op':
                op = self.async_ops.pop(act[1])
                if op[0] == 'tma':
                    self.complete_tma(op)
                else:
                    # wgmma groups of one warpgroup complete in order
                    w = op[1]
                    if self.groups[w][0] != op[2]:
                        self.async_ops.append(op)
                        continue
                    self.complete_mma(op)
                continue
            w = act[1]
            c = cond[w]
            if c[0] == 'sync':
                waiting_sync.add(w)
                live = {v for v in range(4) if cond[v] is not None}
                if waiting_sync >= live:
                    released = list(waiting_sync)
                    waiting_sync.clear()
                    if any(cond[v][0] != 'sync' for v in released):
                        self.fail('mismatched barrier')
                    for v in released:
                        try:
                            cond[v] = next(progs[v])
                        except StopIteration:
                            cond[v] = None
                continue
            try:
                cond[w] = next(progs[w])
            except StopIteration:
                cond[w] = None
        # (e) nothing outstanding at exit
        if self.async_ops:
            self.fail(f'(e) outstanding at exit: {self.async_ops}')
        for s in range(self.S):
            if self.bar_pend[s] != 1 or self.bar_tx[s] != 0:
                self.fail(f'(e) barrier {s} armed at exit')
        expect = self.tiles * self.steps
        if self.waits != 4 * expect or self.loads_issued != expect:
            self.fail(f'count mismatch: waits {self.waits} loads {self.loads_issued} expected {expect}')


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else 'kernel'
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    fails = {}
    first = {}
    n = 0
    for tiles in range(1, 7):
        for steps in range(1, 14):
            for r in range(runs):
                n += 1
                sim = Sim(tiles, steps, random.Random(rng.random()), variant)
                try:
                    sim.run()
                except Violation as e:
                    key = str(e).split(':')[0][:60]
                    k = str(e)[:3]
                    fails[k] = fails.get(k, 0) + 1
                    first.setdefault(k, (tiles, steps, str(e)))
    print(f'variant={variant}: {n} runs (tiles 1..6 x steps 1..13 x {runs}), failures: {sum(fails.values())}')
    for k, v in sorted(fails.items()):
        print(f'  {k}: {v} runs, e.g. tiles={first[k][0]} steps={first[k][1]}: {first[k][2]}')


if __name__ == '__main__':
    main()
