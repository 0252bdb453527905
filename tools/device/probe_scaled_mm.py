"""Which at::_scaled_mm operand/output combinations does this GPU's cuBLASLt
accept? Prints one line per combination (used to debug the FP8 Linear)."""
import torch

def probe(a_dt, b_dt, out_dt, m, k, n, fast):
    a = torch.randn(m, k, device="cuda").to(a_dt)
    b = torch.randn(n, k, device="cuda").to(b_dt).t()  # column-major
    one = torch.tensor(1.0, device="cuda")
    try:
        torch._scaled_mm(a, b, one, one, out_dtype=out_dt, use_fast_accum=fast)
        torch.cuda.synchronize()
        return "ok"
    except Exception as e:
        return "FAIL " + str(e).splitlines()[0][:120]

e4, e5 = torch.float8_e4m3fn, torch.float8_e5m2
for a_dt, b_dt in [(e4, e4), (e5, e4), (e4, e5)]:
    for out_dt in [torch.bfloat16, torch.float32]:
        for fast in [False, True]:
            print(f"{a_dt} x {b_dt} -> {out_dt} fast={fast}: {probe(a_dt, b_dt, out_dt, 256, 512, 384, fast)}")
