"""Generate the synthetic COCO-format dataset used by the toy configs.

Every object has a box, an area and a mask (RLE) of its visible pixels, so
the same files serve detection and instance segmentation.

Example:
    python tools/make_synthetic_coco.py data/synthetic
    python tools/make_synthetic_coco.py /tmp/shapes --num-train 50 --seed 3
    python tools/make_synthetic_coco.py data/parts --class-names \
        nut washer bracket hinge gasket spring
"""
import argparse

from pcka_det.datasets import SyntheticConfig, generate_dataset


def main():
    d = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', nargs='?', default='data/synthetic')
    parser.add_argument('--num-train', type=int, default=d.num_train)
    parser.add_argument('--num-val', type=int, default=d.num_val)
    parser.add_argument('--image-size', type=int, nargs=2,
                        default=list(d.image_size), metavar=('W', 'H'))
    parser.add_argument('--max-objects', type=int, default=d.max_objects)
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--class-names', nargs=len(d.class_names),
                        default=list(d.class_names), metavar='NAME',
                        help='category names of the six shapes, in the '
                        f'order {" ".join(d.class_names)}')
    args = parser.parse_args()
    cfg = SyntheticConfig(args.num_train, args.num_val,
                          tuple(args.image_size), args.max_objects,
                          d.min_size, d.max_size, args.seed,
                          tuple(args.class_names))
    for split, path in generate_dataset(args.out_dir, cfg).items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
