"""The public ops; each module registers its op with torch.library."""
