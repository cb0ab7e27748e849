import random
def kernel(ex_all, A, E):
    chunks=(A+1023)>>10
    CH=16
    ex=[[(-1) for _ in range(CH)] for t in range(1024)]
    for t in range(1024):
        for j in range(CH):
            a=(j<<10)+t
            ex[t][j]= ex_all[a] if (j<chunks and a<A) else -1
    cw=[[[0]*32 for _ in range(32)] for _ in range(CH)]
    same=[[0]*CH for _ in range(1024)]
    for j in range(chunks):
        for w in range(32):
            for x in range(E):
                b=0
                for lane in range(32):
                    if ex[w*32+lane][j]==x: b|=1<<lane
                for lane in range(32):
                    if ex[w*32+lane][j]==x: same[w*32+lane][j]=b
                cw[j][w][x]=bin(b).count('1')
    start=[0]*32; totals=[0]*E
    for x in range(E):
        running=0
        for j in range(chunks):
            cs=[cw[j][lane][x] for lane in range(32)]
            incl=[sum(cs[:l+1]) for l in range(32)]
            for lane in range(32): cw[j][lane][x]=running+incl[lane]-cs[lane]
            running+=incl[31]
        totals[x]=running; start[x]=running
    c=[start[l] if l<E else 0 for l in range(32)]
    incl=[sum(c[:l+1]) for l in range(32)]
    for l in range(E): start[l]=incl[l]-c[l]
    order=[None]*A; slot=[None]*A
    for j in range(chunks):
        for t in range(1024):
            a=(j<<10)+t; e=ex[t][j]; w=t>>5; lane=t&31
            if a>=A: continue
            if e>=0:
                pos=start[e]+cw[j][w][e]+bin(same[t][j]&((1<<lane)-1)).count('1')
                order[pos]=a; slot[a]=pos
            else: slot[a]=-1
    return order, slot, totals
def ref(ex_all, A, E):
    kept=[a for a in range(A) if ex_all[a]>=0]
    order=sorted(kept, key=lambda a:(ex_all[a],a))
    slot=[-1]*A
    for p,a in enumerate(order): slot[a]=p
    return order, slot, [sum(1 for a in kept if ex_all[a]==x) for x in range(E)]
rng=random.Random(3)
for trial in range(12):
    A=rng.choice([1,7,1023,1024,1025,3000,4096,4128,16384]); E=rng.choice([1,2,5,8,32])
    ex=[rng.randrange(E) if rng.random()>0.1 else -1 for _ in range(A)]
    o,s,tt=kernel(ex,A,E); ro,rs,rt=ref(ex,A,E)
    assert o[:len(ro)]==ro and s==rs and tt==rt, (A,E)
    print('ok',A,E)
