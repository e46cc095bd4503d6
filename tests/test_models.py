import pytest
import torch

from ncmse.models import MLP, SmallCNN, build_model, resnet18_cifar


@pytest.mark.parametrize("d", [5, 9, 512])
def test_resnet18_cifar_feature_dimension(d):
    net = resnet18_cifar(10, d).eval()
    assert net.body[0].kernel_size == (3, 3) and net.body[0].stride == (1, 1)
    assert isinstance(net.body[3], torch.nn.Identity)          # no max-pool
    z, h = net(torch.randn(2, 3, 32, 32), return_features=True)
    assert z.shape == (2, 10) and h.shape == (2, d)
    assert net.W.shape == (10, d)
    torch.testing.assert_close(z, h @ net.W.T + net.b)         # features from the same pass
    last = net.body[7][-1]
    assert (d == 512) == isinstance(last.shortcut, torch.nn.Identity)
    assert bool((h >= 0).all())                                # ReLU features by default


def test_linear_feature_layer_and_small_models():
    net = resnet18_cifar(10, 8, feature_relu=False).eval()
    _, h = net(torch.randn(4, 3, 32, 32), return_features=True)
    assert bool((h < 0).any())
    for model in (SmallCNN((1, 28, 28), 10, 6), MLP((1, 28, 28), 10, 6, feature_relu=False)):
        z, h = model.train()(torch.randn(8, 1, 28, 28), return_features=True)
        assert z.shape == (8, 10) and h.shape == (8, 6)
    assert build_model("cnn", (3, 32, 32), 10, 4).d == 4


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", (3, 32, 32), 10, 4)
    with pytest.raises(ValueError, match="positive integer"):
        resnet18_cifar(10, 0)
    with pytest.raises(ValueError, match="positive integer"):
        MLP((1, 28, 28), 10, -3)
