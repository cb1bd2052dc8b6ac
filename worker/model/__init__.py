"""The model: loading (base, NF4, adapter), the answer trie, the scoring-pass layout, the classifier, batch planning."""
