"""nbflow.api.tracebacks: library frames folded away, the user's frames and the error kept."""

from __future__ import annotations

import json
import traceback

from nbflow.api.tracebacks import fold_library_frames, is_library

# what a notebook's failing cell shows (IPython's layout), as the attempt row stores it
IPYTHON = """---------------------------------------------------------------------------
JSONDecodeError                           Traceback (most recent call last)
Cell In[4], line 1
----> 1 f()

Cell In[3], line 2, in f()
      1 def f():
----> 2     return json.loads("{bad")

File ~/.pyenv/versions/3.11.7/lib/python3.11/json/__init__.py:346, in loads(s, cls)
    345         parse_constant is None and object_pairs_hook is None and not kw):
--> 346     return _default_decoder.decode(s)

File /usr/lib/python3/dist-packages/numpy/core/fromnumeric.py:88, in _wrapreduction(obj)
---> 88     return ufunc.reduce(obj, axis, dtype, out, **passkwargs)

JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
"""


def _user_code() -> None:
    json.loads("{bad")


def test_a_python_traceback_keeps_the_users_frame_and_the_error() -> None:
    try:
        _user_code()
    except ValueError:
        text = traceback.format_exc()
    folded = fold_library_frames(text)
    assert "in _user_code" in folded and 'json.loads("{bad")' in folded
    assert "json/decoder.py" not in folded and "frames in library code (decoder, json)" in folded, folded
    assert folded.rstrip().endswith("(char 1)")


def test_an_ipython_traceback_keeps_the_cells_and_the_error() -> None:
    folded = fold_library_frames(IPYTHON)
    assert "Cell In[4], line 1" in folded and "Cell In[3], line 2, in f()" in folded
    assert "_default_decoder" not in folded and "ufunc.reduce" not in folded
    assert "... 2 frames in library code (fromnumeric, json) ..." in folded, folded
    assert folded.rstrip().endswith("(char 1)")


def test_what_is_library_code() -> None:
    assert is_library(json.__file__) and is_library("/x/site-packages/pandas/core/frame.py")
    assert is_library(traceback.__file__)
    assert not is_library(__file__) and not is_library("/work/project/pipelines/p.py")
    assert fold_library_frames(None) is None and fold_library_frames("") == ""
