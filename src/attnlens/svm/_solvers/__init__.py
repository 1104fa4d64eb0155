"""Private solvers of attnlens.svm: constraint layout, certificates, the cvxpy reference, the
Frobenius active-set method, the nuclear-norm interior-point and proximal point methods and Gen-SVM by NNLS.

The public functions in attnlens.svm validate the parameters; ``constraints.build_constraints``
checks how the arrays fit together (shapes, selection indices) for every Att-SVM method.
"""
