"""Evolutionary optimisation: a real-coded genetic algorithm and particle swarm optimisation, and their use
to initialise a BP (back-propagation) network (seed 002, sections 1, 2 and 6).

Both minimise ``fitness(vector) -> float`` over a box ``bounds`` (an ``(n, 2)`` array of ``[low, high]``)
without gradients, by moving a whole population of candidate vectors:

* :func:`genetic_algorithm` (Holland 1975; real-valued genes as in Michalewicz, "Genetic Algorithms +
  Data Structures = Evolution Programs", 1996): tournament **selection** of parents, **arithmetic
  crossover** ``child = a * p1 + (1 - a) * p2``, **non-uniform mutation** (steps that shrink as the
  generations pass: wide search first, fine tuning last) and **elitism** (the best survive unchanged).
* :func:`particle_swarm` (Kennedy & Eberhart 1995, with Shi & Eberhart's inertia weight, 1998): every
  particle has a velocity pulled towards its own best position and the swarm's best::

      v <- w v + c1 r1 (personal_best - x) + c2 r2 (global_best - x),    x <- x + v

  with ``w`` falling linearly from 0.9 to 0.4.

A BP network trained by gradient descent starts from random weights and can stop in a poor local
minimum; seed 002's remedy is to search the weight space with a GA or PSO first (the fitness is the
training error of the network with those weights) and hand the best vector to BP.
:func:`bp_comparison` runs that experiment on the article's example, ``y = x1^2 + x2^2`` with a small
tanh MLP (``tools/evolve_bp_example.py`` prints it; the README reports what it shows).
"""
import numbers
from typing import NamedTuple

import numpy as np

from . import losses, nn, optim

__all__ = ["EvolutionResult", "genetic_algorithm", "particle_swarm", "sphere", "rosenbrock",
           "make_mlp", "get_flat_weights", "set_flat_weights", "train_bp", "make_quadratic_data", "bp_comparison"]


class EvolutionResult(NamedTuple):
    """What :func:`genetic_algorithm` and :func:`particle_swarm` return.

    best : (n,) float64, the best vector found; best_fitness : float, its fitness;
    history : dict of (iterations + 1,) arrays, ``"best"`` (best fitness so far, after each generation,
    the initial population first) and ``"mean"`` (mean fitness of the population); evaluations : int.
    """
    best: np.ndarray
    best_fitness: float
    history: dict
    evaluations: int


# ----------------------------------------------------------------------------------------------------
# Test functions (global minimum 0)
# ----------------------------------------------------------------------------------------------------
def sphere(vector):
    """``sum x_i^2``: minimum 0 at the origin."""
    return float(np.sum(np.square(vector)))


def rosenbrock(vector):
    """``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``: minimum 0 at (1, ..., 1), at the end of a curved valley."""
    x = np.asarray(vector, dtype=np.float64)
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


# ----------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------
def _check_bounds(bounds):
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or len(bounds) < 1:
        raise ValueError(f"bounds must be an (n, 2) array of [low, high] rows; got shape {bounds.shape}")
    if not np.all(np.isfinite(bounds)) or np.any(bounds[:, 0] >= bounds[:, 1]):
        raise ValueError("bounds must be finite with low < high in every row")
    return bounds[:, 0], bounds[:, 1]


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def _evaluate(fitness, population):
    """Fitness of each row; NaN counts as the worst possible value (+inf)."""
    values = np.empty(len(population))
    for index, vector in enumerate(population):
        value = fitness(vector.copy())
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"fitness must return a real number; got {type(value).__name__}")
        values[index] = np.inf if np.isnan(value) else float(value)
    return values


def _progress(total, description, enabled):
    """A tqdm bar (or a silent stand-in) for ``total`` steps."""
    if enabled:
        from tqdm import tqdm
        return tqdm(total=total, desc=description, leave=False)

    class _Silent:
        def update(self, steps=1):
            pass

        def set_postfix_str(self, text):
            pass

        def close(self):
            pass
    return _Silent()


# ----------------------------------------------------------------------------------------------------
# Genetic algorithm
# ----------------------------------------------------------------------------------------------------
def _tournament(fitness_values, count, rng, size=2):
    """Indices of ``count`` parents: each the fittest of ``size`` random individuals."""
    contestants = rng.integers(0, len(fitness_values), (count, size))                # (count, size)
    winners = np.argmin(fitness_values[contestants], axis=1)
    return contestants[np.arange(count), winners]


def _non_uniform_mutation(population, low, high, fraction_done, probability, shape_b, rng):
    """Michalewicz's non-uniform mutation: ``x + d(t, high - x)`` or ``x - d(t, x - low)`` with
    ``d(t, y) = y (1 - r^((1 - t/T)^b))``: any step early on, ever smaller ones towards the end."""
    mutate = rng.random(population.shape) < probability                         # (P, n)
    upward = rng.random(population.shape) < 0.5
    room = np.where(upward, high - population, population - low)                  # distance to the bound
    step = room * (1.0 - rng.random(population.shape) ** ((1.0 - fraction_done) ** shape_b))
    moved = np.where(upward, population + step, population - step)
    return np.where(mutate, moved, population)


def genetic_algorithm(fitness, bounds, population=50, generations=100, seed=0, crossover_probability=0.8,
                      mutation_probability=0.2, elite=2, tournament_size=2, mutation_shape=2.0,
                      initial=None, progress=True):
    """Minimise ``fitness`` inside ``bounds`` with a real-coded genetic algorithm.

    Each generation: keep the ``elite`` best; fill the rest with children of tournament-selected parents,
    crossed arithmetically (``c1 = a p1 + (1 - a) p2``, ``c2 = (1 - a) p1 + a p2``, ``a ~ U(0, 1)``, with
    ``crossover_probability``; otherwise copies), then mutated gene by gene (non-uniform mutation with
    ``mutation_probability``). Children never leave the bounds (both operators keep them inside).

    Parameters
    ----------
    fitness : callable, (n,) float64 array -> float (lower is better; NaN counts as +inf)
    bounds : (n, 2) array of [low, high]
    population : int >= 2;  generations : int >= 1;  seed : int (the result depends only on it)
    elite : int in [0, population)
    initial : (n,) array, optional -- put into the first population (e.g. a network's current weights)
    progress : bool -- a tqdm bar on stderr

    Returns
    -------
    EvolutionResult(best, best_fitness, history{"best", "mean"}, evaluations)
    """
    low, high = _check_bounds(bounds)
    size = _check_count(population, "population", 2)
    generations = _check_count(generations, "generations", 1)
    elite = _check_count(elite, "elite", 0)
    if elite >= size:
        raise ValueError(f"elite ({elite}) must be smaller than population ({size})")
    for name, value in (("crossover_probability", crossover_probability),
                        ("mutation_probability", mutation_probability)):
        if not (isinstance(value, numbers.Real) and 0 <= value <= 1):
            raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    rng = np.random.default_rng(seed)
    genes = low + (high - low) * rng.random((size, len(low)))                     # (P, n)
    if initial is not None:
        genes[0] = np.clip(np.asarray(initial, dtype=np.float64).reshape(len(low)), low, high)
    scores = _evaluate(fitness, genes)
    history = {"best": [scores.min()], "mean": [np.mean(scores[np.isfinite(scores)]) if np.any(np.isfinite(scores))
                                                 else np.inf]}
    bar = _progress(generations, "genetic algorithm", progress)
    for generation in range(generations):
        order = np.argsort(scores, kind="stable")
        elites = genes[order[:elite]]
        parents = genes[_tournament(scores, size - elite + 1, rng, tournament_size)]   # (P - e + 1, n), paired
        first, second = parents[0::2], parents[1::2]
        pairs = min(len(first), len(second))
        first, second = first[:pairs], second[:pairs]
        a = rng.random((pairs, 1))
        cross = rng.random((pairs, 1)) < crossover_probability
        child1 = np.where(cross, a * first + (1 - a) * second, first)
        child2 = np.where(cross, (1 - a) * first + a * second, second)
        children = np.concatenate([child1, child2])[:size - elite]
        children = _non_uniform_mutation(children, low, high, generation / generations, mutation_probability,
                                         mutation_shape, rng)
        genes = np.concatenate([elites, children])
        scores = np.concatenate([scores[order[:elite]], _evaluate(fitness, children)])
        history["best"].append(min(history["best"][-1], scores.min()))
        finite = scores[np.isfinite(scores)]
        history["mean"].append(finite.mean() if len(finite) else np.inf)
        bar.update()
        bar.set_postfix_str(f"best {history['best'][-1]:.4g}")
    bar.close()
    best = int(np.argmin(scores))
    evaluations = size + generations * (size - elite)
    return EvolutionResult(genes[best].copy(), float(scores[best]),
                           {key: np.asarray(value) for key, value in history.items()}, evaluations)


# ----------------------------------------------------------------------------------------------------
# Particle swarm
# ----------------------------------------------------------------------------------------------------
def particle_swarm(fitness, bounds, particles=30, iterations=100, seed=0, inertia=(0.9, 0.4), cognitive=2.0,
                   social=2.0, max_velocity=0.2, initial=None, progress=True):
    """Minimise ``fitness`` inside ``bounds`` with particle swarm optimisation (global-best topology).

    ``v <- w v + c1 r1 (pbest - x) + c2 r2 (gbest - x)``, ``r1, r2 ~ U(0, 1)`` per coordinate; ``w`` falls
    linearly from ``inertia[0]`` to ``inertia[1]``; each velocity coordinate is clipped to
    ``max_velocity * (high - low)`` and positions to the bounds (a particle that hits a wall stops there).

    Parameters
    ----------
    fitness, bounds, seed, initial, progress : as :func:`genetic_algorithm`
    particles : int >= 1;  iterations : int >= 1
    inertia : (start, end);  cognitive, social : c1, c2 (2.0 each, Kennedy & Eberhart)
    max_velocity : fraction of each coordinate's range

    Returns
    -------
    EvolutionResult(best, best_fitness, history{"best", "mean"}, evaluations)
    """
    low, high = _check_bounds(bounds)
    count = _check_count(particles, "particles", 1)
    iterations = _check_count(iterations, "iterations", 1)
    if not (isinstance(max_velocity, numbers.Real) and max_velocity > 0):
        raise ValueError(f"max_velocity must be a positive fraction of the range; got {max_velocity!r}")
    rng = np.random.default_rng(seed)
    span = high - low
    v_max = max_velocity * span                                                   # (n,)
    position = low + span * rng.random((count, len(low)))                         # (P, n)
    if initial is not None:
        position[0] = np.clip(np.asarray(initial, dtype=np.float64).reshape(len(low)), low, high)
    velocity = v_max * (2 * rng.random(position.shape) - 1)
    scores = _evaluate(fitness, position)
    personal_best, personal_score = position.copy(), scores.copy()
    leader = int(np.argmin(personal_score))
    history = {"best": [personal_score[leader]], "mean": [np.mean(scores)]}
    bar = _progress(iterations, "particle swarm", progress)
    for iteration in range(iterations):
        w = inertia[0] + (inertia[1] - inertia[0]) * iteration / max(iterations - 1, 1)
        r1, r2 = rng.random(position.shape), rng.random(position.shape)
        velocity = (w * velocity + cognitive * r1 * (personal_best - position)
                    + social * r2 * (personal_best[leader] - position))
        velocity = np.clip(velocity, -v_max, v_max)
        position = np.clip(position + velocity, low, high)
        scores = _evaluate(fitness, position)
        improved = scores < personal_score
        personal_best[improved], personal_score[improved] = position[improved], scores[improved]
        leader = int(np.argmin(personal_score))
        history["best"].append(personal_score[leader])
        history["mean"].append(np.mean(scores))
        bar.update()
        bar.set_postfix_str(f"best {personal_score[leader]:.4g}")
    bar.close()
    return EvolutionResult(personal_best[leader].copy(), float(personal_score[leader]),
                           {key: np.asarray(value) for key, value in history.items()}, count * (iterations + 1))


# ----------------------------------------------------------------------------------------------------
# Seed 002's example: a BP network for y = x1^2 + x2^2, initialised by GA or PSO
# ----------------------------------------------------------------------------------------------------
def make_mlp(inputs=2, hidden=5, outputs=1, seed=0):
    """``Linear(inputs, hidden) -> Tanh -> Linear(hidden, outputs)`` (float64), PyTorch's initialisation.

    2-5-1 is the article's network: 21 weights and biases.
    """
    return nn.Sequential(nn.Linear(inputs, hidden, rng=np.random.default_rng(seed)), nn.Tanh(),
                         nn.Linear(hidden, outputs, rng=np.random.default_rng(seed + 1))).double()


def get_flat_weights(model):
    """All parameters of ``model`` as one (n,) float64 vector, in ``parameters()`` order."""
    return np.concatenate([p.data.ravel() for p in model.parameters()]).astype(np.float64)


def set_flat_weights(model, vector):
    """Copy a vector made by :func:`get_flat_weights` back into ``model``'s parameters."""
    vector = np.asarray(vector, dtype=np.float64)
    sizes = [p.size for p in model.parameters()]
    if vector.shape != (sum(sizes),):
        raise ValueError(f"vector must have shape ({sum(sizes)},) for this model; got {vector.shape}")
    start = 0
    for parameter, size in zip(model.parameters(), sizes):
        parameter.data = vector[start:start + size].reshape(parameter.shape).astype(parameter.dtype)
        start += size
    return model


def train_bp(model, x, y, epochs=1000, lr=0.01):
    """Back-propagation: full-batch Adam on the mean squared error; returns the loss after each epoch."""
    criterion = losses.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=lr)
    curve = np.empty(epochs)
    model.train()
    for epoch in range(epochs):
        model.zero_grad()
        curve[epoch] = criterion(model(x), y)
        model.backward(criterion.backward())
        optimizer.step()
    return curve


def make_quadratic_data(samples=2000, train=1500, low=-5.0, high=5.0, seed=0):
    """The article's data: ``x ~ U(low, high)^2``, ``y = x1^2 + x2^2``, split ``train`` / rest.

    Min-max normalisation to ``[-1, 1]`` (MATLAB's ``mapminmax``) with the *training* minima and maxima,
    for the inputs and for the target. Returns a dict with ``x_train, y_train, x_test, y_test``
    (normalised, float64, ``y`` of shape (N, 1)) and ``y_min, y_max`` to undo the target's scaling.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, (samples, 2))
    y = np.sum(x ** 2, axis=1, keepdims=True)                                     # (N, 1)
    x_min, x_max = x[:train].min(axis=0), x[:train].max(axis=0)
    y_min, y_max = y[:train].min(), y[:train].max()
    scale_x = lambda values: 2 * (values - x_min) / (x_max - x_min) - 1          # noqa: E731
    scale_y = lambda values: 2 * (values - y_min) / (y_max - y_min) - 1          # noqa: E731
    return {"x_train": scale_x(x[:train]), "y_train": scale_y(y[:train]), "x_test": scale_x(x[train:]),
            "y_test": scale_y(y[train:]), "y_min": y_min, "y_max": y_max}


def bp_comparison(seeds=(0, 1, 2, 3, 4), hidden=5, epochs=1000, lr=0.01, population=30, generations=50,
                  weight_bound=3.0, progress=False):
    """Seed 002's experiment: BP alone vs GA-initialised BP vs PSO-initialised BP, over several seeds.

    For each seed: new data (2000 samples, 1500/500) and a new random network. ``bp`` trains it from its
    random weights; ``ga_bp`` and ``pso_bp`` first search the weights in ``[-weight_bound, weight_bound]``
    with a GA (``population`` x ``generations``) or PSO (the same budget), the fitness being the training
    MSE, then train from the best vector with the same BP budget.

    A control, ``uniform_bp``, starts BP from one random vector of the same box (no search), to tell the
    search's effect from that of the wider weight range.

    Returns
    -------
    dict method -> {"test_mse": (S,) test MSE in the original units of y, "search_mse": (S,) training MSE
    after the search (None for BP alone), "curves": list of the search's best-fitness histories}.
    """
    methods = ("bp", "uniform_bp", "ga_bp", "pso_bp")
    results = {name: {"test_mse": [], "search_mse": [], "curves": []} for name in methods}
    criterion = losses.MSELoss()
    for seed in seeds:
        data = make_quadratic_data(seed=seed)
        x, y = data["x_train"], data["y_train"]
        to_units = (data["y_max"] - data["y_min"]) / 2                          # normalised -> original y

        def training_error(vector, model=make_mlp(hidden=hidden, seed=seed)):
            set_flat_weights(model, vector)
            return criterion(model.eval()(x), y)

        start = get_flat_weights(make_mlp(hidden=hidden, seed=seed))
        bounds = np.tile([-weight_bound, weight_bound], (len(start), 1))
        uniform = np.random.default_rng(seed).uniform(-weight_bound, weight_bound, len(start))
        searches = {
            "bp": None,
            "uniform_bp": EvolutionResult(uniform, training_error(uniform), {"best": np.array([])}, 1),
            "ga_bp": genetic_algorithm(training_error, bounds, population, generations, seed=seed, progress=progress),
            "pso_bp": particle_swarm(training_error, bounds, population, generations, seed=seed, progress=progress),
        }
        for name, search in searches.items():
            model = make_mlp(hidden=hidden, seed=seed)
            if search is not None:
                set_flat_weights(model, search.best)
                results[name]["search_mse"].append(search.best_fitness)
                results[name]["curves"].append(search.history["best"])
            train_bp(model, x, y, epochs, lr)
            prediction = model.eval()(data["x_test"])
            results[name]["test_mse"].append(float(np.mean((prediction - data["y_test"]) ** 2)) * to_units ** 2)
    for name in results:
        results[name]["test_mse"] = np.asarray(results[name]["test_mse"])
        results[name]["search_mse"] = np.asarray(results[name]["search_mse"]) if name != "bp" else None
    results["uniform_bp"]["curves"] = []
    return results
