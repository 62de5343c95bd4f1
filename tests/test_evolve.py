"""tinycnn.evolve: the genetic algorithm and particle swarm reach the known minima of test functions,
are reproducible from their seed, respect the bounds and refuse bad input; the BP-network helpers.

Tolerances: over seeds 0-7 (default settings, population 50 x 100 generations for the 5-D sphere, 50 x 200
for the 2-D Rosenbrock, 30 particles), the worst results were: GA sphere 9e-5, GA Rosenbrock 1.5e-4 at
|x - 1| <= 0.025; PSO sphere 4e-6, PSO Rosenbrock 5e-7 at |x - 1| <= 1e-3. The bounds below leave a
margin of 4x to 100x over those, and are far below the starting values (sphere ~8, Rosenbrock ~1e3).
"""
import numpy as np
import pytest

from tinycnn import evolve, losses

SPHERE_5D = [[-5.0, 5.0]] * 5
ROSENBROCK_2D = [[-5.0, 5.0]] * 2
SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_genetic_algorithm_finds_the_minimum_of_the_sphere(seed):
    result = evolve.genetic_algorithm(evolve.sphere, SPHERE_5D, seed=seed, progress=False)
    assert result.best_fitness < 1e-3
    assert np.abs(result.best).max() < 0.05
    assert result.history["best"][0] > 100 * result.best_fitness


@pytest.mark.parametrize("seed", SEEDS)
def test_genetic_algorithm_finds_the_minimum_of_rosenbrock(seed):
    result = evolve.genetic_algorithm(evolve.rosenbrock, ROSENBROCK_2D, generations=200, seed=seed, progress=False)
    assert result.best_fitness < 1e-2
    np.testing.assert_allclose(result.best, [1.0, 1.0], atol=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_particle_swarm_finds_the_minimum_of_the_sphere_and_rosenbrock(seed):
    result = evolve.particle_swarm(evolve.sphere, SPHERE_5D, seed=seed, progress=False)
    assert result.best_fitness < 1e-4
    result = evolve.particle_swarm(evolve.rosenbrock, ROSENBROCK_2D, iterations=200, seed=seed, progress=False)
    assert result.best_fitness < 1e-4
    np.testing.assert_allclose(result.best, [1.0, 1.0], atol=0.01)


@pytest.mark.parametrize("method", [evolve.genetic_algorithm, evolve.particle_swarm])
def test_history_is_monotone_seeded_and_bounded(method):
    bounds = [[0.5, 2.0], [-1.0, 3.0]]
    seen = []

    def fitness(vector):
        seen.append(vector)
        return evolve.sphere(vector)

    first = method(fitness, bounds, 20, 15, seed=3, progress=False)
    again = method(evolve.sphere, bounds, 20, 15, seed=3, progress=False)
    other = method(evolve.sphere, bounds, 20, 15, seed=4, progress=False)
    np.testing.assert_array_equal(first.best, again.best)
    assert not np.array_equal(first.best, other.best)
    assert len(first.history["best"]) == len(first.history["mean"]) == 16
    assert np.all(np.diff(first.history["best"]) <= 0)
    assert first.evaluations == len(seen)
    points = np.array(seen)
    assert np.all(points >= [0.5, -1.0]) and np.all(points <= [2.0, 3.0])
    np.testing.assert_allclose(first.best, [0.5, 0.0], atol=0.2)     # near the constrained minimum, on a wall (small budget)


def test_nan_fitness_counts_as_worst():
    result = evolve.particle_swarm(lambda v: np.nan if v[0] < 0 else evolve.sphere(v - 1), [[-2.0, 2.0]] * 2,
                                   iterations=50, seed=0, progress=False)
    np.testing.assert_allclose(result.best, [1, 1], atol=0.05)


def test_progress_bar_can_be_shown(capsys):
    evolve.genetic_algorithm(evolve.sphere, SPHERE_5D, 10, 3, progress=True)
    assert "genetic algorithm" in capsys.readouterr().err


@pytest.mark.parametrize("call, message", [
    (lambda: evolve.genetic_algorithm(evolve.sphere, [[1, 0]], progress=False), "low < high"),
    (lambda: evolve.genetic_algorithm(evolve.sphere, [1, 2, 3], progress=False), r"\(n, 2\)"),
    (lambda: evolve.genetic_algorithm(evolve.sphere, SPHERE_5D, population=1, progress=False), "population"),
    (lambda: evolve.genetic_algorithm(evolve.sphere, SPHERE_5D, population=4, elite=4, progress=False), "elite"),
    (lambda: evolve.particle_swarm(evolve.sphere, SPHERE_5D, iterations=0, progress=False), "iterations"),
    (lambda: evolve.particle_swarm(lambda v: "bad", SPHERE_5D, progress=False), "real number"),
])
def test_bad_arguments(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_flat_weights_round_trip_and_bp_lowers_the_error():
    model = evolve.make_mlp(seed=0)
    vector = evolve.get_flat_weights(model)
    assert vector.shape == (2 * 5 + 5 + 5 * 1 + 1,)                   # the article's 2-5-1 network: 21 numbers
    evolve.set_flat_weights(model, vector * 2)
    np.testing.assert_array_equal(evolve.get_flat_weights(model), vector * 2)
    with pytest.raises(ValueError, match=r"\(21,\)"):
        evolve.set_flat_weights(model, vector[:-1])
    data = evolve.make_quadratic_data(samples=200, train=150, seed=0)
    assert data["x_train"].min() == -1 and data["x_train"].max() == 1     # min-max to [-1, 1] on training data
    curve = evolve.train_bp(evolve.make_mlp(seed=0), data["x_train"], data["y_train"], epochs=200, lr=0.05)
    assert curve[-1] < curve[0] / 5


def test_bp_comparison_runs_and_the_searches_start_bp_well():
    results = evolve.bp_comparison(seeds=(0,), epochs=50, population=10, generations=5)
    assert set(results) == {"bp", "uniform_bp", "ga_bp", "pso_bp"}
    for name in ("ga_bp", "pso_bp"):
        assert results[name]["test_mse"].shape == (1,) and len(results[name]["curves"][0]) == 6
        start = evolve.make_mlp(seed=0)
        data = evolve.make_quadratic_data(seed=0)
        random_error = losses.MSELoss()(start(data["x_train"]), data["y_train"])
        assert results[name]["search_mse"][0] <= random_error * 1.5      # the search's best is not worse by much
