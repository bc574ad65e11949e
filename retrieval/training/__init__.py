"""Training the second stage: pair sources, trainers and the held-out comparison.

Each source yields `TrainingQuery` records (retrieval.training.pairs); trainers turn them
into a model folder with a card.json; `compare` decides whether a new model may replace
the current one. Nothing here reads another knowledge base's text than the one it is given.
"""
