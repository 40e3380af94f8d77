// The label list the segments panel offers: common structures with their SNOMED CT codes (DICOM CID 7150
// categories, CID 7166/7151 types), so that a saved SEG says what each segment is, not only its name.
// Projects with their own label sets will replace this list; any other label may still be typed.

import type { Code } from "../segmentations/client";

export interface LabelChoice {
  label: string;
  color: string;
  category: Code;
  type: Code;
}

const sct = (value: string, meaning: string): Code => ({ value, scheme: "SCT", meaning });
const ANATOMY = sct("123037004", "Anatomical Structure");
const ALTERED = sct("49755003", "Morphologically Altered Structure");
const TISSUE = sct("85756007", "Tissue");

function choice(label: string, color: string, category: Code, value: string, meaning = label): LabelChoice {
  return { label, color, category, type: sct(value, meaning) };
}

export const LABELS: LabelChoice[] = [
  choice("Liver", "#dd8d5a", ANATOMY, "10200004"),
  choice("Spleen", "#9d6cc4", ANATOMY, "78961009"),
  choice("Right kidney", "#b9654f", ANATOMY, "9846003"),
  choice("Left kidney", "#d08063", ANATOMY, "18639004"),
  choice("Pancreas", "#f3c96b", ANATOMY, "15776009"),
  choice("Stomach", "#d6a4a4", ANATOMY, "69695003"),
  choice("Gallbladder", "#7fb069", ANATOMY, "28231008"),
  choice("Urinary bladder", "#d9d45b", ANATOMY, "89837001"),
  choice("Aorta", "#e04646", ANATOMY, "15825003"),
  choice("Heart", "#c93c5e", ANATOMY, "80891009"),
  choice("Lung", "#7fc6e0", ANATOMY, "39607008"),
  choice("Brain", "#e8c3a8", ANATOMY, "12738006"),
  choice("Prostate", "#8fbcbb", ANATOMY, "41216001"),
  choice("Bone", "#f1efe2", TISSUE, "272673000", "Bone tissue"),
  choice("Tumour", "#4fd15a", ALTERED, "108369006", "Neoplasm"),
  choice("Lesion", "#3fb5d9", ALTERED, "52988006", "Lesion"),
  choice("Cell nucleus", "#5a8be0", ANATOMY, "84640000", "Nucleus"),
];

/** Colours for segments whose label is not on the list, taken in turn. */
const SPARE_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"];

export function labelChoice(label: string): LabelChoice | undefined {
  const wanted = label.trim().toLowerCase();
  return LABELS.find((choice) => choice.label.toLowerCase() === wanted);
}

export function spareColour(index: number): string {
  return SPARE_COLOURS[index % SPARE_COLOURS.length];
}

/** "#rrggbb" as [r, g, b], 0–255. */
export function rgbOf(hex: string): [number, number, number] {
  const value = Number.parseInt(hex.replace("#", ""), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}
