"""A realistic OpenRouter video model list, as GET /videos/models answers it: every field of
contracts.md and every pricing-key family of the recorded live list, on models like the
ones OpenRouter lists (their names and prices here are made up for the test; the shapes
are not). `tests/test_pricing.py` replays it and checks each estimate by hand.

Families covered (values are strings; `cents_` means US cents):
- duration_seconds (flat)                        kwaivgi/kling-v2.5-turbo, acme/upscale-4k
- duration_seconds_<res>                          openai/sora-2-pro
- duration_seconds_with_audio / _without_audio    pixverse/pixverse-v5
  … each with _<res>                              google/veo-3.1
- text_to_video_ / image_to_video_duration_seconds_<res>   alibaba/wan-2.7
- reference_images (per reference)                alibaba/wan-2.7
- cents_per_second_output, _<res>                 luma/ray-2, minimax/hailuo-02
- cents_per_second_video_continuation_<res>       luma/ray-2 (not a generation price)
- cents_per_image_input                           luma/ray-2
- minimum_cents_per_generation                    minimax/hailuo-02
- video_tokens, video_tokens_without_audio        bytedance/seedance-2.0-fast
Video-input models (not text-to-video): acme/upscale-4k (upscaler options), runway/aleph
(an editor, by its description).
"""

REALISTIC_MODELS = [
    {
        "id": "google/veo-3.1",
        "name": "Google: Veo 3.1",
        "description": (
            "Google's Veo 3.1 makes 4 to 8 second clips with native audio. It takes a first and a "
            "last frame, or up to 3 reference images to keep a subject consistent."
        ),
        "supported_durations": [8, 4, 6],
        "supported_resolutions": ["720p", "1080p"],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": True,
        "seed": True,
        "pricing_skus": {
            "duration_seconds_with_audio_720p": "0.40",
            "duration_seconds_without_audio_720p": "0.20",
            "duration_seconds_with_audio_1080p": "0.60",
            "duration_seconds_without_audio_1080p": "0.30",
        },
        "allowed_passthrough_parameters": ["negative_prompt", "person_generation"],
    },
    {
        "id": "openai/sora-2-pro",
        "name": "OpenAI: Sora 2 Pro",
        "description": "Sora 2 Pro: cinematic clips with synchronised sound.",
        "supported_durations": [12, 4, 8],
        "supported_resolutions": ["720p", "1080p"],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "supported_sizes": ["1280x720", "720x1280", "1792x1024", "1024x1792"],
        "supported_frame_images": ["first_frame"],
        "generate_audio": None,
        "seed": False,
        "pricing_skus": {"duration_seconds_720p": "0.30", "duration_seconds_1080p": "0.50"},
        "allowed_passthrough_parameters": [],
    },
    {
        "id": "kwaivgi/kling-v2.5-turbo",
        "name": "Kling: v2.5 Turbo",
        "description": "Fast, fluid motion from text or a starting image.",
        "supported_durations": [5, 10],
        "supported_resolutions": ["1080p"],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame"],
        "generate_audio": False,
        "seed": False,
        "pricing_skus": {"duration_seconds": "0.07"},
        "allowed_passthrough_parameters": ["cfg_scale"],
    },
    {
        "id": "alibaba/wan-2.7",
        "name": "Alibaba: Wan 2.7",
        "description": "Wan 2.7: text-to-video, image-to-video and reference-to-video with up to 4 references.",
        "supported_durations": [5, 10],
        "supported_resolutions": ["720p", "1080p"],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": False,
        "seed": True,
        "pricing_skus": {
            "text_to_video_duration_seconds_720p": "0.10",
            "image_to_video_duration_seconds_720p": "0.08",
            "text_to_video_duration_seconds_1080p": "0.15",
            "image_to_video_duration_seconds_1080p": "0.12",
            "reference_images": "0.05",
        },
        "allowed_passthrough_parameters": [],
    },
    {
        "id": "bytedance/seedance-2.0-fast",
        "name": "ByteDance: Seedance 2.0 Fast",
        "description": "Seedance 2.0 Fast animates frames or reference images, with audio and video parts.",
        "supported_durations": [5, 10, 4],
        "supported_resolutions": ["480p", "720p"],
        "supported_aspect_ratios": ["16:9", "9:16", "1:1", "21:9"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": True,
        "seed": True,
        "pricing_skus": {"video_tokens": "0.0000012", "video_tokens_without_audio": "0.0000008"},
        "allowed_passthrough_parameters": [],
    },
    {
        "id": "minimax/hailuo-02",
        "name": "MiniMax: Hailuo 02",
        "description": "Hailuo 02: physics-aware motion at 768p or 1080p.",
        "supported_durations": [6, 10],
        "supported_resolutions": ["768p", "1080p"],
        "supported_aspect_ratios": None,
        "supported_sizes": None,
        "supported_frame_images": ["first_frame"],
        "generate_audio": False,
        "seed": False,
        "pricing_skus": {
            "cents_per_second_output_768p": "4.5",
            "cents_per_second_output_1080p": "8",
            "minimum_cents_per_generation": "30",
        },
        "allowed_passthrough_parameters": None,
    },
    {
        "id": "luma/ray-2",
        "name": "Luma: Ray 2",
        "description": "Ray 2 from Luma: natural motion, keyframes at start and end.",
        "supported_durations": [5, 9],
        "supported_resolutions": ["720p"],
        "supported_aspect_ratios": ["16:9", "9:16", "4:3", "3:4", "21:9", "9:21"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": False,
        "seed": False,
        "pricing_skus": {
            "cents_per_second_output": "9",
            "cents_per_second_video_continuation_720p": "6",
            "cents_per_image_input": "2",
        },
        "allowed_passthrough_parameters": ["loop"],
    },
    {
        "id": "pixverse/pixverse-v5",
        "name": "PixVerse: v5",
        "description": "PixVerse v5 with optional generated sound.",
        "supported_durations": [5, 8],
        "supported_resolutions": None,
        "supported_aspect_ratios": ["16:9", "9:16", "1:1", "4:3", "3:4"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame"],
        "generate_audio": True,
        "seed": True,
        "pricing_skus": {"duration_seconds_with_audio": "0.12", "duration_seconds_without_audio": "0.08"},
        "allowed_passthrough_parameters": [],
    },
    {
        "id": "acme/upscale-4k",
        "name": "Acme: Upscale 4K",
        "description": "Makes a video sharper, up to 4K.",
        "supported_durations": None,
        "supported_resolutions": ["2K", "4K"],
        "supported_aspect_ratios": None,
        "supported_sizes": None,
        "supported_frame_images": None,
        "generate_audio": None,
        "seed": None,
        "pricing_skus": {"duration_seconds": "0.10"},
        # "for video upscaling models only" (contracts.md)
        "allowed_passthrough_parameters": ["upscale_factor", "creativity"],
    },
    {
        "id": "runway/aleph",
        "name": "Runway: Aleph",
        "description": "Video editing: restyle, relight or change an existing video with a prompt.",
        "supported_durations": [5],
        "supported_resolutions": ["720p"],
        "supported_aspect_ratios": ["16:9"],
        "supported_sizes": None,
        "supported_frame_images": None,
        "generate_audio": False,
        "seed": False,
        "pricing_skus": {"cents_per_second_output": "15"},
        "allowed_passthrough_parameters": [],
    },
]
