"""Private solvers of attnlens.svm: constraint layout, certificates, the cvxpy reference, the
Frobenius active-set method, the nuclear-norm interior-point method and Gen-SVM by NNLS.

Nothing here validates user input; the public functions in attnlens.svm do.
"""
