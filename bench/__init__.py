"""Side-by-side benchmarks against scipy / scikit-learn / numpy anchors: ``python -m bench``."""
