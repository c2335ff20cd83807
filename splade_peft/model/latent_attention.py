"""NV-Embed's latent-attention pooling (Lee et al. 2024, `encoder.pooling=latent_attention`): each token's last
hidden state attends, as a query, to a trainable array of latents (keys = values = the latents); the attended
vectors go through a two-layer GELU MLP and are mean-pooled over the text's tokens. A learned, content-dependent
pooling in place of EOS or plain mean pooling, with few parameters (latents x hidden + attention + MLP) that train
beside the adapter and are saved with it."""

import torch
from torch import nn

# A fixed initialisation: the zero-shot reference row is then the very block that training starts from.
INIT_SEED = 0


class LatentAttentionPooling(nn.Module):
    """(batch, length, hidden) hidden states + attention mask -> (batch, hidden)."""

    def __init__(self, hidden_size: int, latents: int, heads: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the job's own random stream is left as it was
            torch.manual_seed(INIT_SEED)
            self.latents = nn.Parameter(torch.randn(latents, hidden_size) / hidden_size ** 0.5)
            self.attention = nn.MultiheadAttention(hidden_size, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        attended, _ = self.attention(hidden, latents, latents, need_weights=False)
        mixed = self.mlp(attended)
        mask = attention_mask.to(mixed.dtype).unsqueeze(-1)
        return (mixed * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
