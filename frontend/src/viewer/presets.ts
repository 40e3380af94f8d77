// Window/level presets. CT windows are in HU (the volume holds modality-LUT values, docs/volumes.md); other
// modalities have no absolute scale, so "auto" takes percentiles of the volume's values.

export interface WindowPreset {
  id: string;
  label: string;
  /** The key that selects it in the viewer. */
  key: string;
  center: number;
  width: number;
}

export const CT_PRESETS: WindowPreset[] = [
  { id: "soft-tissue", label: "Soft tissue", key: "1", center: 40, width: 400 },
  { id: "lung", label: "Lung", key: "2", center: -600, width: 1500 },
  { id: "bone", label: "Bone", key: "3", center: 400, width: 1800 },
  { id: "brain", label: "Brain", key: "4", center: 40, width: 80 },
];
export const AUTO_KEY = "0";

export interface VoiRange {
  lower: number;
  upper: number;
}

export function presetRange(preset: { center: number; width: number }): VoiRange {
  return { lower: preset.center - preset.width / 2, upper: preset.center + preset.width / 2 };
}

/**
 * A window from the 1st to the 99.5th percentile of (a sample of) the values, ignoring the zeros of the
 * background so that a head in a large field of view is not washed out. Samples at most `maxSamples` values.
 */
export function automaticRange(values: ArrayLike<number>, maxSamples = 200_000): VoiRange {
  const stride = Math.max(1, Math.floor(values.length / maxSamples));
  const sample: number[] = [];
  for (let n = 0; n < values.length; n += stride) {
    const v = values[n];
    if (v !== 0 && Number.isFinite(v)) sample.push(v);
  }
  if (sample.length === 0) return { lower: 0, upper: 1 };
  sample.sort((a, b) => a - b);
  const at = (q: number): number => sample[Math.min(sample.length - 1, Math.floor(q * sample.length))];
  const lower = at(0.01);
  const upper = at(0.995);
  return upper > lower ? { lower, upper } : { lower, upper: lower + 1 };
}

/** The window a series opens with: soft tissue for CT, automatic for everything else (MR, PET, …). */
export function initialPreset(modality: string): WindowPreset | "auto" {
  return modality === "CT" ? CT_PRESETS[0] : "auto";
}
