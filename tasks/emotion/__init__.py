"""emotion2vec+: the engine (one pass: scores, frame logits, embeddings), its exact batched encoder, and the screen / drill-down."""
