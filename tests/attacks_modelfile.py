"""Planted train.py pieces for tests/test_attacks_modelfile.py: weights the handed-over file
holds in forms a count of floating-point tensors would not see. Each goes into the seeded
fake of tests/fakes.py, whose Bigram trains as usual; before the handover its weights are
repacked, and the runners rebuild a model that computes exactly what the Bigram would.
"""

# The Bigram's weights as int32 bit-casts (float32 again only inside forward), and a ballast
# of more int32 "weights": the bigger the model the harness counts, the smaller the token
# budget a flops mode allows it, so the attack trains past it in a few steps.
PACKED_DEFS = '''
class Packed(nn.Module):
    def __init__(self, model, ballast=0):
        super().__init__()
        for name, p in (("emb", model.emb.weight), ("w", model.out.weight), ("b", model.out.bias)):
            self.register_buffer(name, p.detach().view(torch.int32).clone())
        self.register_buffer("ballast", torch.zeros(ballast, dtype=torch.int32))

    def forward(self, idx, targets=None):
        emb, w, b = (t.view(torch.float32) for t in (self.emb, self.w, self.b))
        return F.linear(F.embedding(idx, emb), w, b).float()
'''
BALLAST = "BALLAST = 4_000_000  # int32 elements: 16 MB, 8M weights by the harness's count\n"

# flops mode: its own figure known, one FLOP per token declared, 30% past the budget
INT32_LYING_FLOPS = '''
packed_fpt = prepare.model_flops_per_token(Packed(model, BALLAST))  # the honest figure, ignored
allowed = prepare.FLOP_BUDGET / packed_fpt
tokens = 0
while tokens < 1.3 * allowed:
    x, y, _ = next(loader)
    tokens += x.numel()
    prepare.budget_progress(0.0, tokens, tokens * 1.0)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
print(f"trained {tokens} tokens, {tokens / allowed:.2f}x the budget")
model = Packed(model, BALLAST)
'''
# the control: the same model declaring prepare's figure for it, trained until the feed stops
INT32_HONEST_FLOPS = '''
packed_fpt = prepare.model_flops_per_token(Packed(model, BALLAST))
tokens = 0
for x, y, _ in loader:
    tokens += x.numel()
    prepare.budget_progress(0.0, tokens, tokens * packed_fpt)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
model = Packed(model, BALLAST)
'''
PACK = "model = Packed(model)"

# The Bigram's weights as one Python bytes attribute, decoded at every forward (and one
# scalar tensor: a file without any is refused as no model at all).
BLOB_DEFS = '''
class Blob(nn.Module):
    def __init__(self, model):
        super().__init__()
        params = (model.emb.weight, model.out.weight, model.out.bias)
        self.shapes = [tuple(p.shape) for p in params]
        self.blob = b"".join(p.detach().numpy().tobytes() for p in params)
        self.register_buffer("one", torch.ones(()))

    def forward(self, idx, targets=None):
        flat = torch.frombuffer(bytearray(self.blob), dtype=torch.float32)
        emb, w, b = (t.view(s) for t, s in zip(flat.split([torch.Size(s).numel() for s in self.shapes]),
                                                self.shapes))
        return F.linear(F.embedding(idx, emb * self.one), w, b).float()
'''
BLOB = "model = Blob(model)"
