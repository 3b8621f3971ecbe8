"""What a stage's report view is drawn with: PNG figures, side-by-side text and token diffs, status marks."""
