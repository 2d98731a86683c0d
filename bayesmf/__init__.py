"""bayesmf: probabilistic and Bayesian matrix factorization with honest uncertainty."""
