#!/usr/bin/python3
"""make_seeds.py: writes the committed seed corpora of the C harnesses.

    tests/fuzz/make_seeds.py            rewrite corpus/idx and corpus/options

corpus/idx: small IDX files, valid (images of 28x28 and of other sizes, labels),
their gzip versions, and malformed ones (each kind the reader must reject).
corpus/options: realistic command lines in fuzz_options' input format (two
rank-count bytes, then one token per line, "%%" before the saved run's
arguments). The study seeds (corpus/study) are hand-written text files.
The output is deterministic (gzip without timestamps), so re-running this
changes nothing in git unless the seeds here change.
"""
import gzip
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def idx(dims, data):
    """IDX uint8 file bytes: magic 00 00 08 ndim, big-endian dims, data."""
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def pattern(n, seed=7):
    """n deterministic bytes that look like digit images (mostly 0, some ink)."""
    out, x = [], seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(0 if (x >> 16) % 3 else (x >> 8) & 0xFF)
    return out


def gz(data, level=6):
    return gzip.compress(data, compresslevel=level, mtime=0)


def idx_seeds():
    img2 = idx([2, 28, 28], pattern(2 * 784))
    img1 = idx([1, 28, 28], pattern(784, 3))
    img345 = idx([3, 4, 5], pattern(60, 5))
    img111 = idx([1, 1, 1], [255])
    img_wide = idx([2, 1, 30], pattern(60, 9))
    lab5 = idx([5], [3, 1, 4, 1, 5])
    lab10 = idx([10], list(range(10)))
    lab1 = idx([1], [9])
    s = {
        "valid-images-2x28x28.idx": img2,
        "valid-images-1x28x28.idx": img1,
        "valid-images-3x4x5.idx": img345,
        "valid-images-1x1x1.idx": img111,
        "valid-images-2x1x30.idx": img_wide,
        "valid-labels-5.idx": lab5,
        "valid-labels-10.idx": lab10,
        "valid-labels-1.idx": lab1,
        "valid-images-2x28x28.idx.gz": gz(img2),
        "valid-images-3x4x5.idx.gz": gz(img345, 1),
        "valid-labels-10.idx.gz": gz(lab10, 9),
        "valid-labels-5-two-members.idx.gz": gz(lab5[:6]) + gz(lab5[6:]),
        "valid-images-1x1x1-stored.idx.gz": gz(img111, 0),
        # malformed: what test_idx.c checks, and neighbours
        "bad-empty.idx": b"",
        "bad-magic-text.idx": b"P5\n28 28\n255\n",
        "bad-magic-int32-type.idx": bytes([0, 0, 0x0C, 3]) + struct.pack(">III", 1, 1, 1) + b"\0\0\0\0",
        "bad-magic-float-type.idx": bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0",
        "bad-ndim-2.idx": idx([2, 3], pattern(6)),
        "bad-ndim-4.idx": idx([1, 1, 2, 2], pattern(4)),
        "bad-header-cut-3.idx": img2[:3],
        "bad-header-cut-10.idx": img2[:10],
        "bad-data-cut.idx": img2[:-1],
        "bad-trailing-byte.idx": img345 + b"\0",
        "bad-trailing-4k.idx": lab1 + bytes(4100),
        "bad-label-10.idx": idx([3], [1, 10, 2]),
        "bad-label-255.idx": idx([1], [255]),
        "bad-zero-count.idx": idx([0, 28, 28], []),
        "bad-zero-rows.idx": idx([1, 0, 28], []),
        "bad-labels-zero.idx": idx([0], []),
        "bad-huge-dims.idx": bytes([0, 0, 8, 3]) + struct.pack(">III", 0xFFFFFFFF, 0xFFFF, 0xFFFF),
        "bad-count-over-int.idx": bytes([0, 0, 8, 1]) + struct.pack(">I", 0x80000000),
        "bad-count-claims-60000.idx": bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 28, 28) + bytes(784),
        "bad-gz-cut.idx.gz": gz(img2)[:40],
        "bad-gz-header-only.idx.gz": gz(img2)[:10],
        "bad-gz-crc.idx.gz": gz(lab10)[:-8] + b"\xde\xad\xbe\xef" + gz(lab10)[-4:],
        "bad-gz-isize.idx.gz": gz(lab10)[:-4] + b"\x99\0\0\0",
        "bad-gz-flipped.idx.gz": bytes(b ^ (0x55 if i == 20 else 0) for i, b in enumerate(gz(img345))),
        "bad-gz-trailing-garbage.idx.gz": gz(lab5) + b"garbage",
        "bad-gz-of-nothing.idx.gz": gz(b""),
        "bad-gz-of-gz.idx.gz": gz(gz(lab5)),
        "bad-gz-data-cut.idx.gz": gz(img2[:-5]),
        "bad-gz-label-10.idx.gz": gz(idx([2], [0, 10])),
        "bad-gz-magic-only.idx.gz": b"\x1f\x8b",
    }
    return s


# One token per line; argv[0] is added by the harness.
def opts(n1, n2, cmdline, saved=None):
    out = bytes([(n1 - 1) % 64, (n2 - 1) % 64]) + "\n".join(cmdline.split()).encode()
    if saved is not None:
        out += b"\n%%\n" + "\n".join(saved.split()).encode()
    return out


def options_seeds():
    return {
        "defaults": opts(1, 1, ""),
        "gb32-sync-np2": opts(2, 2, "--bn sync --global-batch 32 --epochs 10"),
        "gb512-ghost8": opts(2, 2, "--bn local --ghost-batch 8 --global-batch 512 --epochs 10 --bn-eval recompute"),
        "np4-group2": opts(4, 4, "--bn sync --bn-group 2 --global-batch 512 --epochs 10 --bn-eval recompute"),
        "sgd-nesterov": opts(2, 2, "--optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --weight-decay 5e-4 "
                                   "--lr-scale linear --lr-ref-batch 64 --warmup-epochs 2 --global-batch 256"),
        "adam-full": opts(1, 1, "--optimizer adam --beta1 0.8 --beta2 0.99 --adam-eps 1e-8 --lr auto "
                                "--hidden 512,256 --bn-place before --bn-momentum 0.9 --bn-eps 1e-5 "
                                "--init-scale 0.5 --seed 7"),
        "data-options": opts(3, 3, "--data data/mnist --dataset fashion --val-fraction 0.1 --split-seed 1 "
                                   "--train-limit 1000 --eval-batch 500 --diagnostics 10"),
        "run-options": opts(2, 2, "--metrics runs/x.h5 --force --threads 2 --reduce node --quiet "
                                  "--checkpoint ck.h5 --checkpoint-every 100"),
        "overlap": opts(2, 2, "--reduce mpi --overlap 4 --global-batch 64"),
        "equals-forms": opts(2, 2, "--epochs=3 --batch=16 --bn=local --hidden=128,64,32"),
        "help": opts(1, 1, "--help"),
        "version": opts(129, 1, "--version"),
        "help-markdown": opts(129, 1, "--help-markdown"),
        "short-h": opts(1, 1, "-h"),
        "abbreviated": opts(2, 2, "--glob 64 --epo 2 --opt sgd"),
        "bad-unknown": opts(1, 1, "--no-such-flag 3"),
        "bad-missing-value": opts(1, 1, "--epochs"),
        "bad-positional": opts(1, 1, "--epochs 3 extra"),
        "bad-range": opts(1, 1, "--bn-momentum 1.5 --epochs 0"),
        "bad-gb-divide": opts(3, 3, "--global-batch 64"),
        "bad-batch-disagree": opts(2, 2, "--batch 16 --global-batch 64"),
        "bad-nesterov-adam": opts(1, 1, "--nesterov"),
        "bad-ghost-sync": opts(2, 2, "--bn sync --ghost-batch 8"),
        "bad-hidden": opts(1, 1, "--hidden 256,,128"),
        "arch-convnet": opts(2, 2, "--arch conv16,pool,conv32k5,pool,dense128 --bn sync --global-batch 64"),
        "bad-arch": opts(1, 1, "--arch pool,dense0,conv8k4"),
        "resume-arch": opts(2, 2, "--resume ck.h5 --arch conv8,pool,dense64", "--arch conv8,pool,dense64"),
        # resume: the command line, "%%", the checkpoint's run
        "resume-same": opts(2, 2, "--resume ck.h5 --epochs 20", "--bn sync --global-batch 64 --epochs 10"),
        "resume-elastic-2-4": opts(4, 2, "--resume ck.h5", "--bn sync --global-batch 64"),
        "resume-elastic-4-2": opts(2, 4, "--resume ck.h5 --threads 1", "--bn sync --global-batch 64"),
        "resume-group": opts(4, 4, "--resume ck.h5 --bn-group 2", "--bn sync --bn-group 2 --global-batch 128"),
        "resume-batch-given": opts(2, 2, "--resume ck.h5 --batch 32", "--global-batch 64"),
        "resume-free-options": opts(2, 2, "--resume ck.h5 --epochs 30 --eval-batch 100 --quiet --reduce mpi "
                                          "--overlap 2 --checkpoint-every 5", "--epochs 10"),
        "resume-bad-lr": opts(2, 2, "--resume ck.h5 --lr 0.01", "--lr 0.001"),
        "resume-bad-bn": opts(2, 2, "--resume ck.h5 --bn local", "--bn sync"),
        "resume-hidden": opts(1, 1, "--resume ck.h5 --hidden 512,256", "--hidden 512,256"),
        "resume-local-np": opts(4, 2, "--resume ck.h5", "--bn local --global-batch 64"),
        "resume-sgd": opts(2, 2, "--resume ck.h5 --optimizer sgd", "--optimizer sgd --momentum 0.9 --lr 0.1"),
    }


def write(dirname, seeds):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{d}: {len(seeds)} files")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(__doc__)
    write("idx", idx_seeds())
    write("options", options_seeds())
