"""Localization, the model-backed side of CHA: problems from a run, the engine oracle, the stage.

``problems`` turns behaviour rules into (rule, regime) problems with covered and unrelated prompt
slices; ``oracle`` answers the search's queries with the batched ablation engine; ``stage`` runs
CHA over every problem and writes ``localization/``; ``validate`` runs brute force beside it. The
search itself is the torch-free :mod:`mecharule.search`.
"""
