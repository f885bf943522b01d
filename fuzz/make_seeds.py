#!/usr/bin/env python3
"""Writes a small seed corpus of valid inputs (plain and gzip) for the fuzz targets:
corpus/csv_reader, corpus/idx_images, corpus/idx_labels. Deterministic; run from fuzz/."""
import gzip
import os
import struct

PIXELS = 784


def image(k):
    return bytes((j * (2 * k + 3) + 11 * k) % 256 for j in range(PIXELS))


def put(target, name, data):
    os.makedirs(os.path.join("corpus", target), exist_ok=True)
    with open(os.path.join("corpus", target, name), "wb") as f:
        f.write(data)
    # mtime=0 so that the .gz seeds are the same bytes every time.
    with open(os.path.join("corpus", target, name + ".gz"), "wb") as f:
        f.write(gzip.compress(data, mtime=0))


def csv(count, header, labeled):
    lines = []
    if header:
        lines.append(",".join((["label"] if labeled else []) + [f"pixel{i}" for i in range(PIXELS)]))
    for k in range(count):
        fields = ([str(k % 10)] if labeled else []) + [str(p) for p in image(k)]
        lines.append(",".join(fields))
    return ("\n".join(lines) + "\n").encode()


for header in (True, False):
    for labeled in (True, False):
        put("csv_reader", f"h{int(header)}-l{int(labeled)}.csv", csv(1, header, labeled))
put("csv_reader", "two.csv", csv(2, True, True))


def shaped(names, label_at, number, index=None):
    """Two labeled rows: `names(i)` the pixel names, the label at `label_at`, each number
    written by `number`, and a pandas index column named `index` if given."""
    header = [names(i) for i in range(PIXELS)]
    header.insert(label_at, "label")
    lines = [([] if index is None else [index]) + header]
    for k in range(2):
        fields = [number(p) for p in image(k)]
        fields.insert(label_at, number(k % 10))
        lines.append(([] if index is None else [str(5 * k)]) + fields)
    return ("\n".join(",".join(line) for line in lines) + "\n").encode()


put("csv_reader", "fashion.csv", shaped(lambda i: f"pixel{i + 1}", 0, str))
put("csv_reader", "rxc.csv", shaped(lambda i: f"{i // 28 + 1}x{i % 28 + 1}", 0, str))
put("csv_reader", "label-last.csv", shaped(lambda i: f"pixel{i}", PIXELS, str))
put("csv_reader", "pandas.csv", shaped(lambda i: f"pixel{i}", 0, lambda v: f"{v}.0", index=""))

for count in (1, 3):
    pixels = b"".join(image(k) for k in range(count))
    put("idx_images", f"images-{count}", struct.pack(">IIII", 0x803, count, 28, 28) + pixels)
    labels = bytes(k % 10 for k in range(count))
    put("idx_labels", f"labels-{count}", struct.pack(">II", 0x801, count) + labels)
