"""The run's pictures: PCA and t-SNE in NumPy, and the PNG plots (Agg, no pyplot state)."""
import numpy as np
import pytest

from tinycnn import evaluate, nn, plots, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _blobs(rng, per_class=30, classes=3, dims=20, spread=0.3):
    """Well-separated Gaussian clusters: centres 10 apart in a 20-D space, std ``spread``."""
    centres = rng.normal(size=(classes, dims)) * 10
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dims)), labels


def _nearest_neighbour_agreement(points, labels):
    """Share of points whose nearest other point has the same label (1.0: clusters kept apart)."""
    distances = np.square(points[:, None] - points[None]).sum(-1)
    np.fill_diagonal(distances, np.inf)
    return np.mean(labels[distances.argmin(1)] == labels)


# ------------------------------------------------------------------------------------------------ pca
@pytest.mark.nojit
def test_pca_matches_the_eigenvectors_of_the_covariance(rng):
    x = rng.normal(size=(200, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1])        # variances 25, 9, 1, ...
    projected, explained = plots.pca(x, 2)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))   # ascending
    top = eigenvectors[:, ::-1][:, :2]
    # same subspace up to sign; float64 SVD vs eigh agree to ~1e-10
    centred = x - x.mean(0)
    np.testing.assert_allclose(np.abs(projected), np.abs(centred @ top), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(explained, eigenvalues[::-1][:2] / eigenvalues.sum(), rtol=1e-8)
    assert np.var(projected[:, 0]) > np.var(projected[:, 1])


@pytest.mark.nojit
def test_pca_sign_is_fixed_so_flipping_the_data_gives_the_same_picture(rng):
    x = rng.normal(size=(50, 4)) * [3, 2, 1, 0.5]
    a, _ = plots.pca(x, 2)
    b, _ = plots.pca(-x, 2)             # SVD would be free to flip; our rule fixes the directions
    np.testing.assert_allclose(a, -b, atol=1e-10)   # the data flipped, so the coordinates flip


def test_pca_rejects_bad_input():
    with pytest.raises(ValueError, match="n_components"):
        plots.pca(np.ones((5, 3)), 4)
    with pytest.raises(ValueError, match="NaN"):
        plots.pca(np.array([[0.0, np.nan], [1.0, 2.0]]))


# ----------------------------------------------------------------------------------------------- tsne
def test_tsne_neighbourhoods_have_the_requested_perplexity(rng):
    x = rng.normal(size=(60, 5))
    squared = np.square(x[:, None] - x[None]).sum(-1)
    p = plots._conditional_probabilities(squared, perplexity=10.0)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(1)          # nats
    np.testing.assert_allclose(np.exp(entropy), 10.0, rtol=1e-3)   # bisection tolerance 1e-5 in log space
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    assert np.all(np.diag(p) == 0)


def test_tsne_keeps_separated_clusters_apart_and_is_reproducible(rng):
    x, labels = _blobs(rng)
    embedding = plots.tsne(x, perplexity=10, iterations=500, seed=1)
    assert embedding.shape == (90, 2)
    assert _nearest_neighbour_agreement(embedding, labels) == 1.0
    np.testing.assert_array_equal(embedding, plots.tsne(x, perplexity=10, iterations=500, seed=1))


def test_tsne_rejects_a_perplexity_larger_than_the_data():
    with pytest.raises(ValueError, match="perplexity"):
        plots.tsne(np.random.default_rng(0).normal(size=(10, 3)), perplexity=30)


# ----------------------------------------------------------------------------------------------- plots
def _history():
    return [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.3 * e, "val_loss": 2.2 / e,
             "val_accuracy": 0.28 * e} for e in (1, 2, 3)]


def _assert_small_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) < 60_000          # the README shows these: keep them small


def test_every_plot_writes_a_small_png(tmp_path, rng):
    nn.init.manual_seed(0)
    model = run.build_model("mobilenet_v2", 3, 0.25)
    names = ("circle", "square", "ring")
    figures = {
        "curves": plots.plot_history(_history()),
        "confusion": plots.plot_confusion_matrix(np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]]), names),
        "filters": plots.plot_filters(model),
        "maps": plots.plot_feature_maps(model, rng.random((3, 32, 32)).astype(np.float32)),
        "embedding": plots.plot_embedding(rng.normal(size=(30, 2)), np.arange(30) % 3, names, "PCA",
                                           explained=(0.5, 0.2)),
    }
    for name, figure in figures.items():
        _assert_small_png(plots.save_figure(figure, tmp_path / f"{name}.png"))


def test_plot_filters_shows_one_cell_per_output_channel():
    weight = np.random.default_rng(0).normal(size=(12, 3, 3, 3))
    figure = plots.plot_filters(weight, columns=8)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 12 and len(figure.axes) == 16          # 2 rows of 8, the last 4 empty


def test_plot_confusion_matrix_checks_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 2\) for 2 class names"):
        plots.plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"])


def test_feature_maps_default_layer_keeps_a_quarter_of_the_resolution_and_hooks_are_removed(rng):
    nn.init.manual_seed(0)
    model = run.build_model("mobilenet_v2", 10, 0.25)
    layer = plots.default_feature_layer(model, (1, 3, 32, 32))
    maps = plots.capture_output(model, layer, rng.random((1, 3, 32, 32)).astype(np.float32))
    assert maps.shape[-1] == 8                                   # 32 / 4
    assert all(not module._forward_hooks for module in model.modules())
    with pytest.raises(ValueError, match="no layer 'features.99'.*features"):
        plots.capture_output(model, "features.99", np.zeros((1, 3, 32, 32), np.float32))


def test_write_report_writes_the_pngs_of_a_run(tmp_path, rng):
    nn.init.manual_seed(0)
    model = run.build_model("mobilenet_v2", 3, 0.25)
    features = rng.normal(size=(40, 1280)).astype(np.float32)
    labels = np.arange(40) % 3
    logits = rng.normal(size=(40, 3)).astype(np.float32)
    evaluation = evaluate.Evaluation(1.0, 0.5, logits, labels, features)
    written = plots.write_report(tmp_path, _history(), model, evaluation, ("a", "b", "c"),
                                  sample_image=(rng.random((3, 32, 32)) * 255).astype(np.uint8),
                                  tsne=True)
    assert [path.name for path in written] == ["curves.png", "confusion_matrix.png", "filters.png",
                                               "feature_maps.png", "embedding_pca.png", "embedding_tsne.png"]
    for path in written:
        _assert_small_png(path)


@pytest.mark.parametrize("images, embeddings", [(1, []), (5, ["embedding_pca.png"]),
                                                (6, ["embedding_pca.png", "embedding_tsne.png"])])
def test_write_report_leaves_out_embeddings_that_too_few_images_cannot_make(tmp_path, rng, images, embeddings):
    """PCA needs 2 points and t-SNE 6 (perplexity (N - 2) / 3 > 1): a tiny validation split gives no error."""
    nn.init.manual_seed(0)
    model = run.build_model("mobilenet_v2", 3, 0.25)
    evaluation = evaluate.Evaluation(1.0, 0.5, rng.normal(size=(images, 3)).astype(np.float32), np.arange(images) % 3,
                                  rng.normal(size=(images, 1280)).astype(np.float32))
    written = plots.write_report(tmp_path, _history(), model, evaluation, ("a", "b", "c"))
    assert [path.name for path in written] == ["curves.png", "confusion_matrix.png", "filters.png", *embeddings]


def test_training_plots_do_not_touch_pyplot_state():
    import matplotlib
    backend = matplotlib.get_backend()
    plots.plot_history(_history())
    assert matplotlib.get_backend() == backend
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == []                               # no pyplot figures were opened
