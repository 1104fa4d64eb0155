"""attnlens.svm"""
