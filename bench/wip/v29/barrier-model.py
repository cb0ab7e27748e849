# The barrier model of grouped_tma128pp_nt_bf16 (v29) by a desk-review helper, session 16: the producer and
# the 8 consumer warps as generators interleaved at random, TMA bytes landing in random order, the
# mbarrier try_wait parity rule; checks stale passes of the full / order barriers and deadlocks for
# 5 stages, 1-12 steps of K, 0-7 tiles a block. python3 barrier-model.py: the kernel's protocol
# (an order arrival per warp): 'bad 0'; --leader: one leader's arrival (v15c's, the first v29): 163 bad.
import random, sys
PER_WARP = '--leader' not in sys.argv  # the fixed kernel: every warp arrives (order count 4)
ORDER_COUNT = 4 if PER_WARP else 1
class Bar:
    def __init__(s, count): s.count=count; s.pending=count; s.tx=0; s.n=0
    def arrive(s, tx=0):
        s.tx += tx; s.pending -= 1; assert s.pending >= 0; s.chk()
    def complete_tx(s, b):
        s.tx -= b; s.chk()
    def chk(s):
        if s.pending == 0 and s.tx == 0:
            s.n += 1; s.pending = s.count
    def ok(s, P): return (s.n & 1) != P

def run(S, steps, ntiles, wgsync, seed, maxiter=200000):
    rnd = random.Random(seed)
    full=[Bar(1) for _ in range(S)]; empty=[Bar(4) for _ in range(S)]; order=[Bar(ORDER_COUNT), Bar(ORDER_COUNT)]
    stage_pos = [None]*S  # position whose data is (being) in stage
    reading = [set() for _ in range(S)]  # (c,w) reading stage
    inflight = []  # (pos, st) TMA pending
    errors = []
    # producer generator
    def producer():
        it = 0
        for j in range(ntiles):
            for k in range(steps):
                st = it % S
                while not empty[st].ok(((it//S)&1)^1): yield
                if reading[st]: errors.append(f"TMA issue pos {it} into stage {st} while read by {reading[st]}")
                full[st].tx += 2; full[st].arrive(0)
                inflight.append((it, st)); inflight.append((it, st))
                stage_pos[st] = it
                yield
                it += 1
    wgbar = {}
    def wg_sync(c, key):
        # simple named barrier: 4 warps
        cnt = wgbar.setdefault((c,key), [0])
        cnt[0] += 1
        while cnt[0] < 4: yield
    def warp(c, w):
        gen = 0
        for j in range(c, ntiles, 2):
            if j > 0:
                P = ((j-1)>>1)&1
                while not order[c^1].ok(P): yield
                # check validity: order[c^1] phase for tile j-1 must be complete, i.e. n == m+1
                m = (j-1)>>1
                if order[c^1].n != m+1: errors.append(f"order wait c{c} w{w} tile {j}: n={order[c^1].n} want {m+1}")
            prev = None
            for k in range(steps):
                it = j*steps + k; st = it % S
                while not full[st].ok((it//S)&1): yield
                if stage_pos[st] != it or (it, st) in inflight:
                    errors.append(f"stale full pass c{c} w{w} tile {j} k{k} pos {it} stage holds {stage_pos[st]} inflight={(it,st) in inflight}")
                    return
                if k == steps-1 and (PER_WARP or w == 0): order[c].arrive()
                if wgsync:
                    yield from wg_sync(c, ('mma', j, k))
                reading[st].add((c,w))
                yield
                if prev is not None:
                    reading[prev].discard((c,w)); empty[prev].arrive()
                prev = st
            yield
            reading[prev].discard((c,w)); empty[prev].arrive()
            yield from wg_sync(c, ('epi0', j))
            for _ in range(rnd.randint(0, 30)): yield
            yield from wg_sync(c, ('epi1', j))
    threads = [producer()] + [warp(c,w) for c in range(2) for w in range(4)]
    alive = list(range(len(threads)))
    weights = [rnd.random()+0.05 for _ in threads]
    it = 0
    stuck = 0
    while alive and it < maxiter:
        it += 1
        # TMA landing
        if inflight and rnd.random() < 0.3:
            i = rnd.randrange(len(inflight)); pos, st = inflight.pop(i); full[st].complete_tx(1)
            continue
        t = rnd.choices(alive, [weights[a] for a in alive])[0]
        try: next(threads[t])
        except StopIteration: alive.remove(t)
        if errors: return errors
    if alive and not inflight: return [f"deadlock/timeout alive={alive}"]
    if alive: return [f"timeout alive={alive}"]
    return errors

bad = 0
for S in [5]:
  for steps in range(1, 13):
    for nt in range(0, 8):
      for wgsync in [False, True]:
        for seed in range(40):
          e = run(S, steps, nt, wgsync, seed*1000+steps*10+nt)
          if e:
              bad += 1
              if bad < 10: print(S, steps, nt, wgsync, seed, e[:2])
print("bad", bad)
