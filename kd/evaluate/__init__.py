"""Stage 4, evaluation: retrieval, fidelity and MSE on held-out pairs (``metrics``), STS across
languages (``sts``) and the watch set a run re-embeds at each evaluation (``watch``)."""
