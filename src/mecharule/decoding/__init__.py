"""Decoding infrastructure shared by behaviour measurement and the intervention engine.

``prefill`` (left padding after a shared prompt prefix computed once, KV-cache handling) and
``generation`` (the greedy decode loop, stop tokens, batching by length). It registers no hooks and
imports neither :mod:`mecharule.behaviour` nor :mod:`mecharule.interventions`, which both build on it.
"""
