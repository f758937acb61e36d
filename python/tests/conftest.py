"""pytest setup for the kvblock binding: make `import kvblock` find the package
and the library (make check-python sets KVBLOCK_LIBRARY to the fresh build)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
