"""Fine-tune pyannote segmentation-3.0 on simulated conversations (experiment for issue 13).

Training material, and nothing else: the 20 ``librispeech/train-clean-100`` voices and the real
noises of ``noise/misc`` and ``noise/speech-commands`` (read from ``../shared/data``). Never
test-other (its voices are the evaluated mixtures) and never AMI (both excerpt sets are scored).

Each training example is a 10 s chunk (the model's window) simulated from a seed and the step
number, so a run is reproducible:

* 1-3 voices; turns of 0.8-5 s (random crops of a voice's utterance) in random order, a pause of
  0-1.2 s between turns or, with probability ``P_OVERLAP``, the next turn starting 0.2-1.5 s
  before the previous one ends; short (0.3-1 s) backchannels of another voice inside a turn;
  never more than two voices at once (the model's powerset has at most two per frame);
* per-voice level like a meeting: the main voice at 0 dB, the others 0-6 dB quieter, and with
  probability ``P_DISTANT`` one voice distant: 10-25 dB quieter and more reverberant;
* synthetic reverberation per voice (probability 0.8): a direct path plus exponentially decaying
  Gaussian noise, RT60 0.2-0.7 s, direct-to-reverberant ratio 0-10 dB (distant voice -5-3 dB);
* a real noise crop at 0-25 dB SNR against the loudest voice, kept at least 3 dB below the
  quietest voice (a distant voice under the noise would be unlabelable);
* exact labels: 10 ms frames of each clean source that hold speech by energy, pauses shorter than
  0.2 s kept as speech (``_speech_runs`` of ``diarization_der.py``, the benchmark's reference
  detector), read at the centre of each model output frame (``model.receptive_field``).

Loss: pyannote's own (``SpeakerDiarization.training_step``): the powerset prediction is turned
into multi-label, the reference is permuted to it (``permutate``), turned into powerset classes
and scored with the negative log-likelihood. Starts from the bundled segmentation-3.0 weights;
SincNet is frozen, the LSTM, linear layers and classifier are trained with Adam.

Checkpoints land as model directories emoflow loads unchanged (``config.yaml`` +
``pytorch_model.bin``, the original pyannote/lightning checkpoint with the new state dict,
checked by loading it back with :func:`tasks.models.checkpoints.load_pyannote_model`)::

    python benchmarks/finetune_segmentation.py --steps 600 --save-every 200 --out /tmp/ft/sim
    python benchmarks/diarization_der.py --segmentation-model /tmp/ft/sim/step600
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data"

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.signal import fftconvolve  # noqa: E402

from diarization_der import PAUSE_S, _speech_runs  # noqa: E402

SR = 16000
CHUNK_S = 10.0
LABEL_HOP_S = 0.01
MAX_SPEAKERS = 3
P_OVERLAP = 0.5
P_BACKCHANNEL = 0.4
P_DISTANT = 0.5
P_REVERB = 0.8
MIN_SPEECH_SHARE = 0.3
"""A voice whose energy reference marks less of it as speech has no usable exact labels."""


# --------------------------------------------------------------------------- material
def load_voices(*, folder: Path = DATA / "librispeech" / "train-clean-100", min_pause: float = PAUSE_S) -> list[dict]:
    """The training voices: audio and its 10 ms speech mask (the benchmark's energy reference).

    Parameters
    ----------
    folder : Path
        A LibriSpeech folder with ``speakers.csv`` (file, speaker_id).
    min_pause : float
        Pauses shorter than this (s) stay speech in the mask.

    Returns
    -------
    list of dict
        ``speaker`` (str), ``audio`` (float32), ``speech`` (bool, one per 10 ms); voices with
        less than ``MIN_SPEECH_SHARE`` speech by that reference are left out.
    """
    voices = []
    with open(folder / "speakers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            audio, sr = sf.read(folder / row["file"], dtype="float32")
            assert sr == SR, (row["file"], sr)
            n = len(audio) // int(SR * LABEL_HOP_S)
            speech = np.zeros(n, dtype=bool)
            for a, b in _speech_runs(audio, min_pause=min_pause, hop=int(SR * LABEL_HOP_S)):
                speech[int(round(a / LABEL_HOP_S)) : int(round(b / LABEL_HOP_S))] = True
            if speech.mean() < MIN_SPEECH_SHARE:
                print(f"skipping voice {row['speaker_id']}: the energy reference hears speech in "
                      f"{100 * speech.mean():.0f} % of it (noise as loud as the voice)")
                continue
            voices.append({"speaker": str(row["speaker_id"]), "audio": audio[: n * int(SR * LABEL_HOP_S)],
                           "speech": speech})
    return sorted(voices, key=lambda v: v["speaker"])


def load_noises(*, folders: tuple[Path, ...] = (DATA / "noise" / "misc", DATA / "noise" / "speech-commands")) -> list[np.ndarray]:
    """The real noise recordings (16 kHz mono float32), sorted by path."""
    noises = []
    for f in sorted(p for folder in folders for p in folder.glob("*.wav")):
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR and x.ndim == 1, (f, sr, x.shape)
        noises.append(x)
    return noises


# --------------------------------------------------------------------------- simulation
def synthetic_rir(*, rng: np.random.Generator, rt60: float, drr_db: float) -> np.ndarray:
    """A room impulse response: a unit direct path plus exponentially decaying Gaussian noise.

    Parameters
    ----------
    rng : numpy Generator
    rt60 : float
        Time (s) for the tail to decay by 60 dB.
    drr_db : float
        Direct-to-reverberant energy ratio (dB).
    """
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[0] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def _place_turns(*, rng: np.random.Generator, voices: list[dict], chosen: list[int]) -> list[tuple[int, int, int, int]]:
    """Turns of a chunk: (voice index, chunk start frame, utterance start frame, length), 10 ms frames.

    At most two voices at once and a voice never overlaps itself.
    """
    n = int(round(CHUNK_S / LABEL_HOP_S))
    busy = np.zeros((len(chosen), n), dtype=bool)
    turns = []

    def free(slot: int, a: int, b: int) -> bool:
        a, b = max(a, 0), min(b, n)
        if a >= b:
            return False
        return not busy[slot, a:b].any() and busy[:, a:b].sum(axis=0).max() < 2

    def add(slot: int, a: int, length: int) -> None:
        v = voices[chosen[slot]]
        total = len(v["speech"])
        length = min(length, total)
        u0 = int(rng.integers(0, total - length + 1))
        lo, hi = max(a, 0), min(a + length, n)
        busy[slot, lo:hi] = True
        turns.append((chosen[slot], a, u0, length))

    t = int(rng.uniform(-2.0, 1.0) / LABEL_HOP_S)
    prev_slot, prev_end = None, t
    while t < n:
        if prev_slot is None or len(chosen) == 1 or rng.random() < 0.15:
            slot = int(rng.integers(len(chosen))) if prev_slot is None or len(chosen) == 1 else prev_slot
        else:
            slot = int(rng.choice([s for s in range(len(chosen)) if s != prev_slot]))
        length = int(rng.uniform(0.8, 5.0) / LABEL_HOP_S)
        start = t
        if prev_slot is not None and slot != prev_slot and rng.random() < P_OVERLAP:
            start = prev_end - int(rng.uniform(0.2, 1.5) / LABEL_HOP_S)
        if not free(slot, start, start + length):
            start = max(t, int(busy.any(axis=0).nonzero()[0].max()) + 1 if busy.any() else t)
        add(slot, start, length)
        end = start + length
        if len(chosen) > 1 and length > 150 and rng.random() < P_BACKCHANNEL:
            other = int(rng.choice([s for s in range(len(chosen)) if s != slot]))
            bc_len = int(rng.uniform(0.3, 1.0) / LABEL_HOP_S)
            bc = start + int(rng.integers(30, max(31, length - bc_len - 30)))
            if free(other, bc, bc + bc_len):
                add(other, bc, bc_len)
        prev_slot, prev_end = slot, end
        t = max(end, t + 1) + int(rng.uniform(0.0, 1.2) / LABEL_HOP_S)
    return turns


def simulate_chunk(*, rng: np.random.Generator, voices: list[dict], noises: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One simulated 10 s conversation chunk and its per-voice 10 ms speech labels.

    Parameters
    ----------
    rng : numpy Generator
        The only source of randomness.
    voices : list of dict
        From :func:`load_voices`.
    noises : list of ndarray
        From :func:`load_noises`.

    Returns
    -------
    audio : ndarray, float32, (CHUNK_S * SR,)
    labels : ndarray, bool, (CHUNK_S / LABEL_HOP_S, MAX_SPEAKERS)
        Column i is the i-th voice heard in the chunk; unused columns are all False.
    """
    hop = int(SR * LABEL_HOP_S)
    n = int(round(CHUNK_S / LABEL_HOP_S))
    k = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    chosen = [int(i) for i in rng.choice(len(voices), size=k, replace=False)]
    turns = _place_turns(rng=rng, voices=voices, chosen=chosen)

    tracks = {v: np.zeros(n * hop, dtype=np.float32) for v in chosen}
    labels = {v: np.zeros(n, dtype=bool) for v in chosen}
    for v, a, u0, length in turns:
        lo, hi = max(a, 0), min(a + length, n)
        if hi <= lo:
            continue
        src = voices[v]
        seg = src["audio"][(u0 + lo - a) * hop : (u0 + hi - a) * hop]
        tracks[v][lo * hop : lo * hop + len(seg)] += seg
        labels[v][lo:hi] |= src["speech"][u0 + lo - a : u0 + hi - a]
    heard = [v for v in chosen if labels[v].any()]

    # levels: main voice 0 dB, others 0-6 dB quieter, maybe one distant voice 10-25 dB quieter
    gains_db = {v: (0.0 if i == 0 else -rng.uniform(0.0, 6.0)) for i, v in enumerate(heard)}
    distant = heard[int(rng.integers(1, len(heard)))] if len(heard) > 1 and rng.random() < P_DISTANT else None
    if distant is not None:
        gains_db[distant] = -rng.uniform(10.0, 25.0)
    mix = np.zeros(n * hop, dtype=np.float32)
    levels = []
    for v in heard:
        x = tracks[v]
        if rng.random() < P_REVERB:
            drr = rng.uniform(-5.0, 3.0) if v == distant else rng.uniform(0.0, 10.0)
            x = fftconvolve(x, synthetic_rir(rng=rng, rt60=rng.uniform(0.2, 0.7), drr_db=drr))[: n * hop]
        active = np.repeat(labels[v], hop)
        power = np.mean(x[active] ** 2) + 1e-10
        x = x * (10 ** (gains_db[v] / 20) / np.sqrt(power))  # active-speech RMS = gain
        mix += x.astype(np.float32)
        levels.append(gains_db[v])
    if levels:
        noise = noises[int(rng.integers(len(noises)))]
        reps = int(np.ceil((n * hop + 1) / len(noise)))
        noise = np.tile(noise, reps) if reps > 1 else noise
        o = int(rng.integers(0, len(noise) - n * hop + 1))
        crop = noise[o : o + n * hop]
        noise_db = min(max(levels) - rng.uniform(0.0, 25.0), min(levels) - 3.0)
        mix += crop * (10 ** (noise_db / 20) / np.sqrt(np.mean(crop ** 2) + 1e-10))
    mix *= 10 ** (rng.uniform(-30.0, -10.0) / 20) / (np.max(np.abs(mix)) + 1e-9)  # peak -30..-10 dBFS
    y = np.zeros((n, MAX_SPEAKERS), dtype=bool)
    for i, v in enumerate(heard[:MAX_SPEAKERS]):
        y[:, i] = labels[v]
    return mix.astype(np.float32), y


def frame_targets(labels: np.ndarray, *, step: float, half: float, num_frames: int) -> np.ndarray:
    """10 ms labels read at the centre of each model output frame (``step``, ``half`` of
    ``model.receptive_field``), as pyannote's ``prepare_chunk`` discretises annotations."""
    centres = np.arange(num_frames) * step + half
    idx = np.clip(np.floor(centres / LABEL_HOP_S).astype(int), 0, len(labels) - 1)
    return labels[idx]


def make_batch(*, seed: int, step: int, batch_size: int, voices: list[dict], noises: list[np.ndarray],
               frames: tuple[float, float, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of one step: waveforms (B, 1, samples) and targets (B, frames, MAX_SPEAKERS)."""
    rng = np.random.default_rng([seed, step])
    xs, ys = [], []
    for _ in range(batch_size):
        x, y = simulate_chunk(rng=rng, voices=voices, noises=noises)
        xs.append(x)
        ys.append(frame_targets(y, step=frames[0], half=frames[1], num_frames=frames[2]))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys).astype(np.float32))


# --------------------------------------------------------------------------- training
def powerset_loss(model, powerset, waveforms: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pyannote's permutation-invariant powerset loss (``SpeakerDiarization.training_step``)."""
    from pyannote.audio.utils.permutation import permutate

    prediction = model(waveforms)
    multilabel = powerset.to_multilabel(prediction)
    permutated, _ = permutate(multilabel, targets)
    classes = torch.argmax(powerset.to_powerset(permutated.float()), dim=-1)
    return F.nll_loss(prediction.reshape(-1, prediction.shape[-1]), classes.reshape(-1))


def save_model_dir(*, model, stock_dir: Path, out: Path) -> None:
    """Write ``out`` as a model directory emoflow loads unchanged: the stock ``config.yaml`` and
    the stock pyannote/lightning checkpoint with ``model``'s state dict (temp file + rename),
    then load it back through the restricted unpickler."""
    from tasks.models.checkpoints import PYANNOTE_FILE, load_pyannote_model, read_pyannote_checkpoint

    _, ckpt = read_pyannote_checkpoint(stock_dir)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    assert set(state) == set(ckpt["state_dict"]), set(state) ^ set(ckpt["state_dict"])
    ckpt["state_dict"] = state
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stock_dir / "config.yaml", out / "config.yaml")
    tmp = out / f".{PYANNOTE_FILE}.tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / PYANNOTE_FILE)
    back = load_pyannote_model(out)
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k]), k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/ft/sim"), help="checkpoints go to OUT/stepN/")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--val-chunks", type=int, default=64, help="simulated chunks (other seed) for a held-in loss")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--label-pause", type=float, default=PAUSE_S,
                    help="pauses shorter than this stay speech in the labels (0.84: the AMI references' convention)")
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many steps, save nothing")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from pyannote.audio.utils.powerset import Powerset

    from tasks.models.checkpoints import load_pyannote_model
    from tasks.models.hub import resolve

    stock_dir = Path(resolve("pyannote/segmentation-3.0", kind="segmentation").path)
    model = load_pyannote_model(stock_dir)
    spec = model.specifications
    powerset = Powerset(len(spec.classes), spec.powerset_max_classes)
    rf = model.receptive_field
    frames = (rf.step, 0.5 * rf.duration, model.num_frames(int(CHUNK_S * SR)))
    voices, noises = load_voices(min_pause=args.label_pause), load_noises()
    print(f"{len(voices)} voices ({sum(len(v['audio']) for v in voices) / SR:.0f} s), {len(noises)} noises; "
          f"frames {frames[2]} per {CHUNK_S:.0f} s (step {rf.step * 1000:.1f} ms); torch threads {torch.get_num_threads()}")

    for p in model.sincnet.parameters():
        p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    print(f"training {sum(p.numel() for p in trained)} of {sum(p.numel() for p in model.parameters())} parameters "
          f"(SincNet frozen), Adam lr {args.lr}, batch {args.batch_size}")
    optim = torch.optim.Adam(trained, lr=args.lr)

    val = [make_batch(seed=args.seed + 1000, step=i, batch_size=16, voices=voices, noises=noises, frames=frames)
           for i in range(max(1, args.val_chunks // 16))]

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = float(np.mean([powerset_loss(model, powerset, x, y).item() for x, y in val]))
        model.train()
        return loss

    print(f"step 0 held-in val loss {val_loss():.4f}", flush=True)
    model.train()
    steps = args.time_steps or args.steps
    t_data = t_step = 0.0
    running = []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        x, y = make_batch(seed=args.seed, step=step, batch_size=args.batch_size, voices=voices, noises=noises,
                          frames=frames)
        t1 = time.perf_counter()
        loss = powerset_loss(model, powerset, x, y)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optim.step()
        t_data += t1 - t0
        t_step += time.perf_counter() - t1
        running.append(loss.item())
        if step % 20 == 0 or step == steps:
            print(f"step {step} train loss {np.mean(running):.4f} ({(t_data + t_step) / step:.2f} s/step: "
                  f"data {t_data / step:.2f}, model {t_step / step:.2f})", flush=True)
            running = []
        if not args.time_steps and (step % args.save_every == 0 or step == steps):
            out = args.out / f"step{step}"
            save_model_dir(model=model, stock_dir=stock_dir, out=out)
            print(f"step {step} held-in val loss {val_loss():.4f}; saved {out}", flush=True)
            model.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
