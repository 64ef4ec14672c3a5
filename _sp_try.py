import numpy as np, time, scipy.linalg as sl
import linalg_lowrank as ll
rng=np.random.default_rng(0)
for shape,dt in [((384,1536),np.float32),((300,200),np.float64),((30522,384),np.float32)]:
    A=rng.standard_normal(shape).astype(dt)
    ll.top_singular_values(A[:50,:40],5)
    for k in (8,32,200):
        t=time.perf_counter(); r=ll.top_singular_values(A,k,rng=1); t1=time.perf_counter()-t
        t=time.perf_counter(); s=sl.svdvals(A); t2=time.perf_counter()-t
        print(shape,dt.__name__,k,r.converged,r.n_iter, np.max(np.abs(r.values-s[:k])/s[0]), np.max(r.error_bound), bool(np.all(r.lower_bound<=s[:k]*(1+1e-6))), f"{t1*1e3:.1f}ms {t2*1e3:.1f}ms ratio {t2/t1:.1f}")
