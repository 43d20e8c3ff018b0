"""Default values shared by the Python API and the command line (no heavy imports here)."""

#: Structures per evaluation batch unless a caller says otherwise. Small batches are faster per
#: structure on CPUs: a batch's edge tensors (edges × channels × (l_max+1)²) then stay in cache,
#: while 50 3BPA structures already make the element-wise products memory-bound (measured on 2
#: cores: 450 structures take ~4.3 s in batches of 2–5, 5.2 s in 50s, 10 s in 150s). On a GPU
#: pass a larger batch size.
DEFAULT_EVAL_BATCH_SIZE = 4
