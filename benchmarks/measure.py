"""Prompts per second of our measure path versus Hugging Face ``model.generate``, on the organism.

Both paths get the same prompts (a seeded sample of the arithmetic task), the same batches (our
path sorts prompts by token length and cuts batches of ``--batch-size``; the HF path is handed
exactly those batches, left-padded by the same tokenizer), the same ``max_new_tokens``, greedy
decoding (``do_sample=False``) with ``pad_token_id`` / ``eos_token_id`` set. Both timings include
tokenization and decoding of the answers. The two are alternated ``--repeats`` times in one process
(the machine is shared, so only ratios measured side by side mean anything); the median ratio is
reported. The answers and labels of the two paths must be identical (asserted).

    python benchmarks/measure.py [--n-prompts 4096] [--batch-size 512] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from mecharule.decoding.generation import decode_answers, generate_answers
from mecharule.models import ModelHandle, load_model
from mecharule.tasks import make_task


def hf_generate_answers(
    handle: ModelHandle, prompts: Sequence[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    """HF ``generate`` over the same length-sorted batches as :func:`generate_answers` (order kept)."""
    tok = handle.tokenizer
    assert tok.padding_side == "left"
    lengths = [len(tok(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tok([prompts[i] for i in chunk], padding=True, return_tensors="pt")  # left padding
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        with torch.inference_mode():
            out = handle.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        for i, answer in zip(chunk, decode_answers(handle, out[:, ids.shape[1] :]), strict=True):
            answers[i] = answer
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-prompts", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    handle = load_model("zoo:arithmetic")
    task = make_task("arithmetic")
    table = task.prompts()
    rng = np.random.default_rng(args.seed)
    sample = table.iloc[rng.choice(len(table), args.n_prompts, replace=False)].reset_index(drop=True)
    prompts = sample["prompt"].tolist()
    n_new = task.max_new_tokens

    ours_s, hf_s, ratios = [], [], []
    for rep in range(args.repeats):
        timings = {}
        runs = [("ours", generate_answers), ("hf", hf_generate_answers)]
        for name, fn in runs if rep % 2 == 0 else runs[::-1]:  # alternate which goes first
            started = time.perf_counter()
            answers = fn(handle, prompts, n_new, args.batch_size)
            timings[name] = (time.perf_counter() - started, answers)
        (t_ours, a_ours), (t_hf, a_hf) = timings["ours"], timings["hf"]
        assert a_ours == a_hf, "answers differ between our measure path and HF generate"
        labels_ours, labels_hf = task.score(sample, a_ours), task.score(sample, a_hf)
        assert np.array_equal(labels_ours, labels_hf), "labels differ"
        ours_s.append(t_ours)
        hf_s.append(t_hf)
        ratios.append(t_hf / t_ours)
        print(
            f"repeat {rep}: ours {args.n_prompts / t_ours:8.0f} prompts/s   "
            f"HF generate {args.n_prompts / t_hf:8.0f} prompts/s   ratio {t_hf / t_ours:5.2f}x"
        )
    accuracy = float(np.mean(task.score(sample, a_ours)))
    print(
        f"\n{args.n_prompts} prompts, batch {args.batch_size}, max_new_tokens {n_new}, "
        f"torch threads {torch.get_num_threads()}; answers and labels identical (accuracy {accuracy:.3f})"
    )
    print(
        f"median: ours {args.n_prompts / statistics.median(ours_s):.0f} prompts/s, "
        f"HF generate {args.n_prompts / statistics.median(hf_s):.0f} prompts/s, "
        f"median ratio (HF time / our time) {statistics.median(ratios):.2f}x"
    )


if __name__ == "__main__":
    main()
