"""
plot_ssd.py: the pictures of doc/ssd_three_ways.md, from the files dev/ssd_tutorial writes with --dump.

    cc -O2 -std=c11 -Wall -o dev/ssd_tutorial dev/ssd_tutorial.c -lm
    mkdir -p /tmp/ssd_dump && dev/ssd_tutorial --dump /tmp/ssd_dump
    /usr/bin/python3 dev/plot_ssd.py /tmp/ssd_dump doc/img

Writes to the output folder (default doc/img):
    ssd_matrix_M.png     (a) the semiseparable matrix M of a 32-step sequence, chunk blocks outlined, each block's rank
    ssd_decay_mask.png   (b) its decay mask L_ij = exp(A sum_{k=j+1..i} dt_k)
    ssd_timing.png       (c) forward + backward time of the three forms against T, log-log

Needs matplotlib (Debian: apt-get install -y python3-matplotlib, then run with /usr/bin/python3).
"""
import csv
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, SymLogNorm
    from matplotlib.patches import Rectangle
except ImportError:
    sys.exit("plot_ssd.py needs matplotlib: apt-get install -y python3-matplotlib, then run it with /usr/bin/python3")


def read_matrix(path):
    """a CSV of numbers, one matrix row per line"""
    with open(path) as f:
        return [[float(v) for v in row] for row in csv.reader(f) if row]


def need(path):
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: run dev/ssd_tutorial --dump {os.path.dirname(path)} first")
    return path


def outline_chunks(ax, T, Q, ranks=None, N=None):
    """draw the Q x Q chunk blocks of the lower triangle; write each block's rank in it"""
    nc = T // Q
    for I in range(nc):
        for J in range(I + 1):
            diag = I == J
            ax.add_patch(Rectangle((J * Q - 0.5, I * Q - 0.5), Q, Q, fill=False,
                                   edgecolor="black" if diag else "darkgreen", linewidth=2.0 if diag else 1.5))
            if ranks is not None:
                label = f"rank {ranks[I][J]}" if diag else f"rank {ranks[I][J]}\n= N"
                ax.text(J * Q + Q / 2 - 0.5, I * Q + Q / 2 - 0.5, label, ha="center", va="center", fontsize=8,
                        color="black" if diag else "darkgreen", fontweight="bold",
                        bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1.0))


def plot_matrix(dump, out):
    M = read_matrix(need(os.path.join(dump, "ssd_M.csv")))
    meta = read_matrix(need(os.path.join(dump, "ssd_blocks.csv")))[0]
    T, Q, N, nc = (int(v) for v in meta[:4])
    ranks = [[int(meta[4 + I * nc + J]) for J in range(nc)] for I in range(nc)]
    big = max(abs(v) for row in M for v in row)
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=100)
    # symmetric log colours: the decay makes far blocks small, a linear scale would hide them
    thresh = big * 1e-2
    im = ax.imshow(M, cmap="RdBu_r", norm=SymLogNorm(linthresh=thresh, vmin=-big, vmax=big, base=10),
                   interpolation="nearest")
    outline_chunks(ax, T, Q, ranks, N)
    ax.set_title(f"M = L ∘ (C Bᵀ) ∘ dt,  T={T}, chunk Q={Q}, N={N}\n"
                 "diagonal blocks: computed directly; off-diagonal: rank ≤ N", fontsize=9)
    ax.set_xlabel("j (input time step)")
    ax.set_ylabel("i (output time step)")
    ticks = [-big, -big / 10, -thresh, 0, thresh, big / 10, big]
    bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=ticks, label="M[i, j] (log scale both sides of 0)")
    bar.ax.set_yticklabels([f"{t:.0e}" if t else "0" for t in ticks], fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ssd_matrix_M.png"))
    plt.close(fig)


def plot_mask(dump, out):
    L = read_matrix(need(os.path.join(dump, "ssd_L.csv")))
    meta = read_matrix(need(os.path.join(dump, "ssd_blocks.csv")))[0]
    T, Q = int(meta[0]), int(meta[1])
    masked = [[v if j <= i else float("nan") for j, v in enumerate(row)] for i, row in enumerate(L)]
    small = min(v for i, row in enumerate(L) for j, v in enumerate(row) if j <= i)
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=100)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=small, vmax=1.0), interpolation="nearest")
    outline_chunks(ax, T, Q)
    ax.set_title("decay mask L[i, j] = exp(A · sum of dt over j < k ≤ i)\n"
                 "1 on the diagonal, decaying away from it, 0 above it (white)", fontsize=9)
    ax.set_xlabel("j (input time step)")
    ax.set_ylabel("i (output time step)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="L[i, j] (log scale)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ssd_decay_mask.png"))
    plt.close(fig)


def plot_timing(dump, out):
    with open(need(os.path.join(dump, "ssd_timing.csv"))) as f:
        rows = list(csv.DictReader(f))
    forms = ["recurrence", "chunked", "quadratic"]
    style = {"recurrence": ("tab:blue", "o"), "chunked": ("tab:green", "s"), "quadratic": ("tab:red", "^")}
    P, N, Q = rows[0]["P"], rows[0]["N"], rows[0]["Q"]
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
    for form in forms:
        r = [row for row in rows if row["form"] == form]
        T = [int(row["T"]) for row in r]
        ms = [float(row["forward_ms"]) + float(row["backward_ms"]) for row in r]
        color, marker = style[form]
        ax.plot(T, ms, marker=marker, color=color, label=form)
    # reference slopes through the recurrence's and the quadratic form's first points
    base = [row for row in rows if row["form"] == "recurrence"][0]
    quad = [row for row in rows if row["form"] == "quadratic"][0]
    T0 = int(base["T"])
    Ts = [int(row["T"]) for row in rows if row["form"] == "recurrence"]
    t_lin = float(base["forward_ms"]) + float(base["backward_ms"])
    t_quad = float(quad["forward_ms"]) + float(quad["backward_ms"])
    ax.plot(Ts, [t_lin * 0.5 * t / T0 for t in Ts], ":", color="gray", label="∝ T")
    ax.plot(Ts[:-1], [t_quad * 2 * (t / T0) ** 2 for t in Ts[:-1]], "--", color="gray", label="∝ T²")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel("forward + backward time (ms)")
    ax.set_title(f"SSD, one head, P={P}, N={N}, chunk Q={Q}, double, 1 CPU core", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ssd_timing.png"))
    plt.close(fig)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: plot_ssd.py DUMP_DIR [OUT_DIR (default doc/img)]")
    dump = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else "doc/img"
    os.makedirs(out, exist_ok=True)
    plot_matrix(dump, out)
    plot_mask(dump, out)
    plot_timing(dump, out)
    for name in ("ssd_matrix_M.png", "ssd_decay_mask.png", "ssd_timing.png"):
        path = os.path.join(out, name)
        print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    main()
