"""Shared fixtures. No test downloads anything: models are built from configs or bundled."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def char_tokenizer():
    from mecharule.zoo.char_tokenizer import build_char_tokenizer

    return build_char_tokenizer(["0123456789+-*/= abcdefghijklmnopqrstuvwxyz:\n.,?'"])
