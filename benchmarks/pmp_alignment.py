"""Alignment tightness: train the attention GCN with PMP on a learnable synthetic task and report
the fraction of latent weights below the prior's band edge a_Q(r) (should approach r).

    python benchmarks/pmp_alignment.py ALIGNMENT LAM STEPS [RATE PRIOR SUBSAMPLE EDGE]
    python benchmarks/pmp_alignment.py wasserstein 1 2000 0.98 gaussian 4096 empirical
"""
import json, sys, time
import torch
from pmp.models import create_model
from pmp.pruning import PMP
torch.set_num_threads(1)
align, lam, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.98
prior = sys.argv[5] if len(sys.argv) > 5 else "gaussian"
sub = int(sys.argv[6]) if len(sys.argv) > 6 else 4096
edge = sys.argv[7] if len(sys.argv) > 7 else "empirical"
torch.manual_seed(0)
model = create_model("agcn", num_nodes=21, in_frames=32, in_channels=3, num_classes=45)
g = torch.Generator().manual_seed(1)
X = torch.randn(1024, 32, 21, 3, generator=g)
teacher = torch.randn(32 * 21 * 3, 45, generator=g)
Y = (X.reshape(1024, -1) @ teacher).argmax(1)
pruner = PMP(model, rate=rate, alignment=align, lam=lam, prior=prior, subsample=sub, edge=edge)
opt = torch.optim.Adam(model.parameters(), 1e-3)
marks = {}
t0 = time.time()
for i in range(steps):
    idx = torch.randint(0, 1024, (64,), generator=g)
    loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx]) + pruner.penalty()
    opt.zero_grad(); loss.backward(); opt.step(); pruner.step((i + 1) / steps)
    if (i + 1) in (steps // 10, steps // 4, steps // 2, steps):
        pm = pruner.prior_mismatch()
        marks[i + 1] = {"overall": round(pm["overall"], 4), "fc": round(pm["per_tensor"]["fc.weight"], 4),
                        "min": round(min(pm["per_tensor"].values()), 4)}
model.eval()
with torch.no_grad():
    soft_acc = (model(X).argmax(1) == Y).float().mean().item()
sth = pruner.soft_to_hard()
pruner.finalize()
with torch.no_grad():
    hard_acc = (model(X).argmax(1) == Y).float().mean().item()
print(json.dumps({"align": align, "lam": lam, "prior": prior, "rate": rate, "sub": sub, "edge": edge, "steps": steps, "below_a_prior": marks,
                  "psi_in": round(sth["psi_in_band"], 5), "psi_out": round(sth["psi_out_band"], 5),
                  "gap": round(sth["relative_gap"], 5), "soft_acc": soft_acc, "hard_acc": hard_acc,
                  "secs": round(time.time() - t0, 1)}))
