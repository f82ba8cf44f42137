"""Retrievers: `build(texts, index_dir, cfg)` writes an index; `Cls(index_dir, cfg).search(queries, k)` reads it.

`search` returns `(doc_index, score, source)`: int64 and float32 arrays of shape (n_queries, k), padded with -1 /
NaN where fewer than k documents match, and `source`, None or an array of labels naming the retriever(s) of
each candidate (hybrid).
"""
