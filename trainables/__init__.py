"""The science of the sweep: data, word pairs, alignment, realignment and fine-tuning (no Ray)."""
