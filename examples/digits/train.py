"""Train the bundled example model: a small CNN on scikit-learn's 8x8 handwritten digits.

Only needed to regenerate model.onnx and digits_test.npz (both are committed). Needs
`pip install torch scikit-learn onnxscript`; run it from this folder.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

torch.manual_seed(0)
digits = load_digits()
x = (digits.images / 16.0).astype(np.float32)[:, None]  # [n, 1, 8, 8] in [0, 1]
y = digits.target.astype(np.int64)
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
train, test = order[:1400], order[1400:]

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.BatchNorm2d(32),
    nn.ReLU(),
    nn.AvgPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 2 * 2, 64),
    nn.ReLU(),
    nn.Dropout(0.2),
    nn.Linear(64, 10),
    nn.Softmax(dim=1),
)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
for _epoch in range(40):
    model.train()
    for i in torch.randperm(len(xt)).split(64):
        opt.zero_grad()
        loss = nn.functional.nll_loss(torch.log(model(xt[i]) + 1e-9), yt[i])
        loss.backward()
        opt.step()
model.eval()
with torch.no_grad():
    probs = model(torch.from_numpy(x[test])).numpy()  # the reference the example checks against
print(f"test accuracy {(probs.argmax(1) == y[test]).mean():.3f} on {len(test)} digits")

batch = 16
torch.onnx.export(
    model,
    (torch.from_numpy(x[test[:batch]]),),
    "model.onnx",
    input_names=["image"],
    output_names=["probabilities"],
    dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
    opset_version=17,
    dynamo=False,
)
np.savez_compressed("digits_test.npz", images=x[test], labels=y[test], reference=probs)
