"""Train the Fashion-MNIST classifier whose features give the offline Fréchet distance.

    python scripts/train_fashion_classifier.py --out src/mdgan/weights/fmnist_classifier.safetensors

It trains on the 60,000 training images at 32x32 with a fixed seed, prints the accuracy on the
10,000 test images and writes the weights with the seed, epochs and accuracy as metadata.
Without --out the file goes to $MDGAN_CACHE_DIR/weights/ (~/.cache/mdgan/weights/), where
mdgan looks when the shipped file is missing.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from mdgan.data import default_cache_dir, load_fashion_mnist, load_fashion_mnist_labels
from mdgan.fmnist_classifier import (
    CLASSIFIER_FILE_NAME,
    classifier_accuracy,
    dataset_tensors,
    file_digest,
    save_fashion_classifier,
    train_fashion_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=default_cache_dir() / "weights" / CLASSIFIER_FILE_NAME,
                        help="Output .safetensors file.")
    parser.add_argument("--data", type=Path, default=None,
                        help="Folder with the Fashion-MNIST idx files; default: the usual places.")
    parser.add_argument("--epochs", type=int, default=4, help="Passes over the training images.")
    parser.add_argument("--batch-size", type=int, default=128, help="Images per step.")
    parser.add_argument("--lr", type=float, default=1e-3, help="Initial Adam learning rate.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of weights, data order and dropout.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    splits = {}
    for split in ("train", "test"):
        dataset = load_fashion_mnist(args.data, split, 32, 1, download=True, cache_dir=None, max_images=None)
        labels = load_fashion_mnist_labels(args.data, split, download=True, cache_dir=None, max_images=None)
        splits[split] = dataset_tensors(dataset, labels)

    started = time.perf_counter()

    def report(epoch: int, step: int, loss: float) -> None:
        if step % 100 == 0:
            print(f"epoch {epoch + 1}/{args.epochs}  step {step}  loss {loss:.4f}  "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    model = train_fashion_classifier(
        *splits["train"], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, progress=report,
    )
    seconds = time.perf_counter() - started
    train_accuracy = classifier_accuracy(model, *splits["train"])
    test_accuracy = classifier_accuracy(model, *splits["test"])
    metadata = {
        "seed": str(args.seed),
        "epochs": str(args.epochs),
        "batch_size": str(args.batch_size),
        "lr": str(args.lr),
        "train_images": str(len(splits["train"][0])),
        "train_accuracy": f"{train_accuracy:.4f}",
        "test_accuracy": f"{test_accuracy:.4f}",
        "torch_version": torch.__version__,
    }
    path = save_fashion_classifier(model, args.out, metadata)
    print(f"trained in {seconds:.0f} s on {torch.get_num_threads()} threads")
    print(f"train accuracy {train_accuracy:.4f}, test accuracy {test_accuracy:.4f}")
    print(f"wrote {path} (sha256 {file_digest(path)})")


if __name__ == "__main__":
    main()
