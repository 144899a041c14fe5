"""Opens a `modamba export` file in PyTorch without Modamba or the safetensors
package, checks every tensor's name, shape and dtype against the config in its
metadata, and runs the model (Mamba or Transformer blocks) in pure PyTorch.

  torch_check.py MODEL.safetensors EXPECTED.json

EXPECTED.json: {"dtype": "F32"|"BF16", "tokens": [...], "modalities": [...],
"logits": [[...], ...]} (Modamba's logits for one document; empty: no forward
check). Exits 0 when everything matches, 1 with the reason otherwise.
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F64": torch.float64}


def load_safetensors(path):
    """The layout: an 8-byte little-endian header size, a JSON header, raw bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    data = bytearray(blob[8 + n :])
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        t = torch.frombuffer(data[begin:end], dtype=DTYPES[e["dtype"]]) if end > begin else torch.empty(0)
        tensors[name] = t.reshape(e["shape"])
    return tensors, metadata


def is_transformer(c):
    return c.get("architecture") == "TRANSFORMER"


def expected_shapes(c):
    """Every tensor an export of ModelConfig `c` holds, with its shape."""
    d, v, m = c["d_model"], c["vocab_size"], max(1, c["n_modalities"])

    def proj(routed, out, inp):
        return [m, out, inp] if routed and m > 1 else [out, inp]

    shapes = {"embed.weight": [v, d], "norm_f.weight": [d]}
    if not c["tie_embeddings"]:
        shapes["lm_head.weight"] = [v, d]
    if is_transformer(c):
        f, norm = c["d_ff"], [m, d] if c["route_norms"] and m > 1 else [d]
        for layer in range(c["n_layer"]):
            p = f"layers.{layer}."
            shapes[p + "attn_norm.weight"] = norm
            shapes[p + "attn.qkv_proj.weight"] = proj(c["route_qkv"], 3 * d, d)
            shapes[p + "attn.out_proj.weight"] = proj(c["route_attn_out"], d, d)
            shapes[p + "ffn_norm.weight"] = norm
            shapes[p + "ffn.in_proj.weight"] = proj(c["route_ffn_in"], 2 * f, d)
            shapes[p + "ffn.out_proj.weight"] = proj(c["route_ffn_out"], d, f)
        return shapes
    di, n, k, r = c["expand"] * d, c["d_state"], c["d_conv"], c["dt_rank"]
    for layer in range(c["n_layer"]):
        p = f"layers.{layer}."
        shapes[p + "norm.weight"] = [d]
        shapes[p + "mixer.in_proj.weight"] = proj(c["route_in"], 2 * di, d)
        shapes[p + "mixer.conv.weight"] = [di, k]
        shapes[p + "mixer.conv.bias"] = [di]
        shapes[p + "mixer.x_proj.weight"] = proj(c["route_x"], r + 2 * n, di)
        shapes[p + "mixer.dt_proj.weight"] = proj(c["route_dt"], di, r)
        shapes[p + "mixer.dt_proj.bias"] = [m, di] if c["route_dt"] and m > 1 else [di]
        shapes[p + "mixer.A_log"] = [di, n]
        shapes[p + "mixer.D"] = [di]
        shapes[p + "mixer.out_proj.weight"] = proj(c["route_out"], d, di)
    return shapes


def rms_norm(x, w, eps, mod=None):
    """w: [D], or routed [M, D] chosen per token by `mod`."""
    if w.dim() == 2:
        w = w[mod]
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, w, mod):
    """A shared weight [out, in], or a routed one [M, out, in] chosen per token."""
    if w.dim() == 2:
        return x @ w.T
    return torch.einsum("ti,toi->to", x, w[mod])


def mamba_block(h, p, mod, c):
    """One Mamba-1 mixer over one document, in sequence order (docs/DESIGN.md, "The model")."""
    t_len = h.shape[0]
    di, n, r = c["expand"] * c["d_model"], c["d_state"], c["dt_rank"]
    xz = linear(h, p["in_proj.weight"], mod)
    x, z = xz[:, :di], xz[:, di:]
    k = p["conv.weight"].shape[1]
    u = F.conv1d(F.pad(x.T.unsqueeze(0), (k - 1, 0)), p["conv.weight"].unsqueeze(1),
                 p["conv.bias"], groups=di)[0].T
    u = F.silu(u)
    dbc = linear(u, p["x_proj.weight"], mod)
    dt, b, cc = dbc[:, :r], dbc[:, r : r + n], dbc[:, r + n :]
    bias = p["dt_proj.bias"]
    bias = bias[mod] if bias.dim() == 2 else bias
    delta = F.softplus(linear(dt, p["dt_proj.weight"], mod) + bias)
    a = -torch.exp(p["A_log"])
    state = torch.zeros(di, n, dtype=h.dtype)
    ys = []
    for t in range(t_len):
        state = torch.exp(delta[t, :, None] * a) * state + delta[t, :, None] * b[t][None, :] * u[t, :, None]
        ys.append(state @ cc[t] + p["D"] * u[t])
    y = torch.stack(ys) * F.silu(z)
    return linear(y, p["out_proj.weight"], mod)


def rope(x, theta, head_dim):
    """Rotates pair (j, j + head_dim / 2) of every head of row t by t * theta^(-2j / head_dim)."""
    t_len, half = x.shape[0], head_dim // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    angle = torch.arange(t_len, dtype=torch.float64)[:, None, None] * inv
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = x.view(t_len, -1, head_dim)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(t_len, -1)


def transformer_block(x, p, mod, c):
    """One pre-norm Transformer layer over one document (core/transformer_block.h)."""
    t_len, d, heads, f, eps = x.shape[0], c["d_model"], c["n_head"], c["d_ff"], c["norm_eps"]
    hd = d // heads
    qkv = linear(rms_norm(x, p["attn_norm.weight"], eps, mod), p["attn.qkv_proj.weight"], mod)
    q = rope(qkv[:, :d], c["rope_theta"], hd).view(t_len, heads, hd).transpose(0, 1)
    k = rope(qkv[:, d : 2 * d], c["rope_theta"], hd).view(t_len, heads, hd).transpose(0, 1)
    v = qkv[:, 2 * d :].reshape(t_len, heads, hd).transpose(0, 1)
    scores = q @ k.transpose(1, 2) / hd**0.5
    future = torch.triu(torch.ones(t_len, t_len, dtype=torch.bool), diagonal=1)
    a = torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v
    x = x + linear(a.transpose(0, 1).reshape(t_len, d), p["attn.out_proj.weight"], mod)
    gu = linear(rms_norm(x, p["ffn_norm.weight"], eps, mod), p["ffn.in_proj.weight"], mod)
    return x + linear(F.silu(gu[:, :f]) * gu[:, f:], p["ffn.out_proj.weight"], mod)


def forward(tensors, c, tokens, modalities):
    w = {name: t.to(torch.float64) for name, t in tensors.items()}
    mod = torch.tensor(modalities)
    x = w["embed.weight"][torch.tensor(tokens)]
    eps = c["norm_eps"]
    for layer in range(c["n_layer"]):
        if is_transformer(c):
            prefix = f"layers.{layer}."
            p = {name[len(prefix) :]: t for name, t in w.items() if name.startswith(prefix)}
            x = transformer_block(x, p, mod, c)
            continue
        prefix = f"layers.{layer}.mixer."
        p = {name[len(prefix) :]: t for name, t in w.items() if name.startswith(prefix)}
        x = x + mamba_block(rms_norm(x, w[f"layers.{layer}.norm.weight"], eps), p, mod, c)
    head = w["embed.weight"] if c["tie_embeddings"] else w["lm_head.weight"]
    return rms_norm(x, w["norm_f.weight"], eps) @ head.T


def main():
    tensors, metadata = load_safetensors(sys.argv[1])
    with open(sys.argv[2]) as f:
        expected = json.load(f)
    for key in ("format", "step", "dtype", "config", "modalities", "tokenizers"):
        if key not in metadata:
            sys.exit(f"metadata: no '{key}'")
    c = json.loads(metadata["config"])
    modalities = json.loads(metadata["modalities"])
    tokenizers = json.loads(metadata["tokenizers"])
    m = max(1, c["n_modalities"])
    if modalities != {name: i for i, name in enumerate(["text", "image", "speech"][:m])}:
        sys.exit(f"metadata: modalities {modalities}")
    if tokenizers["text"]["ids"] != [0, min(256, c["vocab_size"])]:
        sys.exit(f"metadata: tokenizers {tokenizers}")
    shapes = expected_shapes(c)
    if sorted(shapes) != sorted(tensors):
        sys.exit(f"names: expected {sorted(shapes)}, got {sorted(tensors)}")
    for name, shape in shapes.items():
        if list(tensors[name].shape) != shape:
            sys.exit(f"{name}: shape {list(tensors[name].shape)}, expected {shape}")
        if tensors[name].dtype != DTYPES[expected["dtype"]]:
            sys.exit(f"{name}: dtype {tensors[name].dtype}, expected {expected['dtype']}")
    print(f"{len(tensors)} tensors: names, shapes and dtypes match the config")
    if expected["logits"]:
        logits = forward(tensors, c, expected["tokens"], expected["modalities"])
        want = torch.tensor(expected["logits"], dtype=torch.float64)
        diff = (logits - want).abs().max().item()
        print(f"PyTorch forward vs Modamba: max |logit difference| {diff:.3g} over {list(want.shape)}")
        if not diff <= 1e-3:
            sys.exit(f"logits differ by {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
