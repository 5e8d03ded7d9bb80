"""Time per training step: nnssl's MAE step vs nnU-Net's supervised step, same plans and network.

Builds the network of a plans configuration twice (nnU-Net: deep supervision + Dice/CE on a label;
nnssl: reconstruction head + masked MSE) and times forward + backward + optimizer step on random
batches of the plans' patch and batch size, alternating the two to spread machine noise.
Prints one JSON line: {"ssl_s_per_step": ..., "supervised_s_per_step": ..., "ratio_ssl_over_supervised": ...}.

    python benchmarks/step_time_ratio.py PLANS.json CONFIGURATION [--device cuda] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnssl.nnunet_adapter.plans import build_network, get_configuration
from nnssl.pretraining.methods.mae import MaskedAutoencoder


def _timed(step, steps: int, device: torch.device) -> float:
    step()  # warm-up (cudnn autotune, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plans")
    parser.add_argument("configuration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    with open(args.plans) as f:
        plans = json.load(f)
    cm = get_configuration(plans, args.configuration)
    batch = (cm.batch_size, 1, *cm.patch_size)
    images = torch.randn(batch, device=device)
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    ssl_net = build_network(plans, args.configuration, 1, 1, deep_supervision=False).to(device)
    sup_net = build_network(plans, args.configuration, 1, 2, deep_supervision=True).to(device)
    mae = MaskedAutoencoder(cm.patch_size, 1)
    generator = torch.Generator().manual_seed(0)
    sup_loss = DC_and_CE_loss({"batch_dice": cm.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    label = (torch.rand(batch, device=device) > 0.5).float()
    optimizers = {n: torch.optim.SGD(m.parameters(), 1e-2, momentum=0.99, nesterov=True)
                  for n, m in (("ssl", ssl_net), ("sup", sup_net))}

    def ssl_step():
        optimizers["ssl"].zero_grad(set_to_none=True)
        with amp:
            loss = mae.forward(ssl_net, images, generator).loss
        loss.backward()
        optimizers["ssl"].step()

    def sup_step():
        optimizers["sup"].zero_grad(set_to_none=True)
        with amp:
            outputs = sup_net(images)
            loss = sum(sup_loss(o, torch.nn.functional.interpolate(label, o.shape[2:])) for o in outputs)
        loss.backward()
        optimizers["sup"].step()

    ssl_times, sup_times = [], []
    for _ in range(args.rounds):
        ssl_times.append(_timed(ssl_step, args.steps, device))
        sup_times.append(_timed(sup_step, args.steps, device))
    ssl, sup = min(ssl_times), min(sup_times)
    print(json.dumps({"device": str(device), "patch_size": cm.patch_size, "batch_size": cm.batch_size,
                      "ssl_s_per_step": round(ssl, 4), "supervised_s_per_step": round(sup, 4),
                      "ratio_ssl_over_supervised": round(ssl / sup, 3)}))


if __name__ == "__main__":
    main()
