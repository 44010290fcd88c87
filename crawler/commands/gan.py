"""``scrapy gan ACTION ...``: train a DCGAN on the face crops, and sample faces from it.

One command with sub-actions (train, sample). The work is in ``models.gan``; this reads the
arguments, turns unusable data or checkpoints into a usage error (exit code 2, one clear message)
and prints the results. torch is imported only when an action runs.
"""

from __future__ import annotations

import argparse

from scrapy.exceptions import UsageError

from crawler.command_base import ActionCommand

ACTIONS = {
    "train": (["FACES_DIR", "OUT"], "train on every .jpg/.png under FACES_DIR (a `scrapy export DEST --faces` "
                                    "tree, or OUTPUT_DIR/faces); writes OUT/samples/epoch_NNNN.png each epoch, "
                                    "OUT/checkpoints/epoch_NNNN.pt every --checkpoint-every epochs, "
                                    "OUT/losses.png and OUT/gan.json. --resume goes on from the newest checkpoint"),
    "sample": (["CKPT", "N", "OUT"], "N faces from a checkpoint's generator: OUT/sample_NNNN.png and OUT/grid.png"),
}


class Command(ActionCommand):
    name = "gan"
    actions = ACTIONS
    about = (
        "A DCGAN (Radford et al.) for 96x96 faces, with one-sided label smoothing. Runs on CUDA with bf16\n"
        "autocast when there is a GPU, else on the CPU."
    )
    examples = (
        "scrapy export data/faces --faces --class-from none",
        "scrapy gan train data/faces models/dcgan --epochs 50 --checkpoint-every 5",
        "scrapy gan train data/faces models/dcgan --epochs 80 --resume",
        "scrapy gan sample models/dcgan/checkpoints/epoch_0080.pt 64 samples/",
    )

    def short_desc(self) -> str:
        return "Train a DCGAN on the face crops, and sample faces from it (torch)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group("train")
        group.add_argument("--epochs", type=int, default=25, metavar="N",
                           help="train up to this epoch, counting those of a resumed run (default 25)")
        group.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                           help="save a checkpoint every N epochs, and after the last (default 5)")
        group.add_argument("--resume", action="store_true", help="go on from the newest OUT/checkpoints/epoch_NNNN.pt")
        group.add_argument("--batch-size", type=int, default=64, metavar="N", help="default 64")
        group.add_argument("--image-size", type=int, default=96, metavar="PX",
                           help="a multiple of 16; faces of another size are resized (default 96)")
        group.add_argument("--width", type=int, default=64, metavar="N",
                           help="channels of the generator's last and the discriminator's first layer (default 64)")
        group.add_argument("--lr", type=float, default=2e-4, metavar="RATE",
                           help="Adam's learning rate (default 0.0002)")
        group = parser.add_argument_group("train and sample")
        group.add_argument("--seed", type=int, default=0, metavar="N", help="default 0")
        group.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 (default: cuda when available)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models import gan

        if action == "train":
            config = gan.GanConfig(
                image_size=opts.image_size, generator_width=opts.width, discriminator_width=opts.width,
                batch_size=opts.batch_size, learning_rate=opts.lr, seed=opts.seed,
            )
            result = gan.train(operands[0], operands[1], epochs=opts.epochs, checkpoint_every=opts.checkpoint_every,
                               resume=opts.resume, config=None if opts.resume else config, device=opts.device,
                               progress=not opts.no_progress)
            last = result.card["history"][-1] if result.card["history"] else None
            if last:
                print(f"Epoch {last['epoch']}: loss D {last['loss_d']:.4f}, G {last['loss_g']:.4f}, "
                      f"{last['images_per_second']:.1f} images/s on {result.card['device']}")
            ran = ", ".join(map(str, result.epochs_run)) or "none"
            print(f"Trained epochs {ran}; checkpoint {result.checkpoint_path}")
        else:
            try:
                count = int(operands[1])
            except ValueError:
                raise UsageError(f"N must be a number of faces, not {operands[1]!r}", print_help=False) from None
            written = gan.sample(operands[0], count, operands[2], seed=opts.seed, device=opts.device)
            print(f"Wrote {len(written)} faces and grid.png to {operands[2]}")
